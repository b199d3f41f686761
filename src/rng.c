/*
  rng.c - seeded random streams.

  xoshiro256** (Blackman & Vigna) seeded through splitmix64 of (seed, stream): fast, 256
  bits of state that a checkpoint stores exactly, and independent streams per purpose
  (anchors, reference, weight init, each rank's batches, each generated row), which is
  what makes runs reproducible and `basis generate` independent of the rank count.
  Not collective; ranks that seed the same stream draw the same numbers.
*/
#include <basis/rng.h>
#include <math.h>

static uint64_t SplitMix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z          = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t Rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

/* BasisRngSeed - the stream `stream` of seed `seed`. Not collective. */
void BasisRngSeed(BasisRng *rng, uint64_t seed, uint64_t stream)
{
  uint64_t x = seed ^ (0xd1b54a32d192ed03ULL * (stream + 1));

  SplitMix64(&x); /* decorrelate neighbouring (seed, stream) pairs */
  for (int i = 0; i < 4; i++) rng->s[i] = SplitMix64(&x);
}

uint64_t BasisRngNext(BasisRng *rng)
{
  uint64_t *s = rng->s, result = Rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = Rotl(s[3], 45);
  return result;
}

/* Uniform in [0, 1) with 53 random bits. */
double BasisRngUniform(BasisRng *rng)
{
  return (double)(BasisRngNext(rng) >> 11) * 0x1.0p-53;
}

/* Standard normal by Box-Muller; the second variate is discarded so the state alone
   (no cached value) describes the stream. */
double BasisRngNormal(BasisRng *rng)
{
  double u = 1.0 - BasisRngUniform(rng), v = BasisRngUniform(rng); /* u in (0, 1] */

  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject). */
PetscInt BasisRngInt(BasisRng *rng, PetscInt n)
{
  uint64_t    range = (uint64_t)n;
  __uint128_t prod  = (__uint128_t)BasisRngNext(rng) * range;
  uint64_t    low   = (uint64_t)prod;
  if (low < range) {
    uint64_t threshold = -range % range;
    while (low < threshold) {
      prod = (__uint128_t)BasisRngNext(rng) * range;
      low  = (uint64_t)prod;
    }
  }
  return (PetscInt)(prod >> 64);
}

static int CompareInt(const void *a, const void *b)
{
  PetscInt x = *(const PetscInt *)a, y = *(const PetscInt *)b;
  return (x > y) - (x < y);
}

/*
  BasisRngSample - k distinct integers drawn uniformly from [0, n), sorted ascending.

  Not collective. Floyd's algorithm with an open-addressing hash set: O(k) time and
  memory whatever n is, so sampling 250 anchors from 10^7 rows costs nothing.
*/
PetscErrorCode BasisRngSample(BasisRng *rng, PetscInt n, PetscInt k, PetscInt idx[])
{
  PetscInt cap   = 16, *table;
  PetscInt count = 0;

  PetscFunctionBeginUser;
  PetscCheck(k >= 0 && k <= n, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE,
             "cannot draw %d distinct values from %d", (int)k, (int)n);
  while (cap < 2 * k) cap *= 2; /* load factor <= 1/2 */
  PetscCall(PetscMalloc1(cap, &table));
  for (PetscInt i = 0; i < cap; i++) table[i] = -1;
  for (PetscInt j = n - k; j < n; j++) {
    PetscInt t = BasisRngInt(rng, j + 1), pick = t;
    for (int pass = 0; pass < 2; pass++) {
      uint64_t  h     = ((uint64_t)pick * 0x9e3779b97f4a7c15ULL) & (uint64_t)(cap - 1);
      PetscBool found = PETSC_FALSE;
      while (table[h] >= 0) {
        if (table[h] == pick) {
          found = PETSC_TRUE;
          break;
        }
        h = (h + 1) & (uint64_t)(cap - 1);
      }
      if (!found) {
        table[h]     = pick;
        idx[count++] = pick;
        break;
      }
      pick = j; /* t was taken: take j, which cannot be */
    }
  }
  PetscCall(PetscFree(table));
  qsort(idx, (size_t)k, sizeof(PetscInt), CompareInt);
  PetscFunctionReturn(0);
}

/*
  BasisNthNotIn - the p-th (0-based) non-negative integer that is not in skip [n] (sorted,
  distinct, >= 0): p plus the number of entries below it, i.e. of s with skip [s] - s <= p
  (a prefix of skip, found by bisection). Increasing in p. Not collective.
*/
PetscInt BasisNthNotIn(PetscInt n, const PetscInt skip[], PetscInt p)
{
  PetscInt lo = 0, hi = n;

  while (lo < hi) {
    PetscInt mid = lo + (hi - lo) / 2;
    if (skip[mid] - mid <= p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return p + lo;
}
