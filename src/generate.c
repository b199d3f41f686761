/*
  generate.c - `basis generate`: synthetic labelled data, written in parallel.

  Types (-type):
    manifold - a Gaussian mixture on a curved low-dimensional manifold in D dimensions:
               class c has a centre in a latent space of dimension -latent (default 2);
               latent points z ~ N(centre_c, 0.35^2 I) are lifted by a fixed smooth map
               x_j = cos(w_j . z + b_j) (random Fourier features, w_j ~ N(0, 1/2)), so the
               data lie near a curved manifold, plus isotropic noise -noise in every
               coordinate. Class structure is real but the classes touch, like real data.
    circles  - -classes concentric circles of radii 1..classes in the first two
               coordinates, Gaussian noise in all D coordinates.
    moons    - two interleaving half moons (scikit-learn's layout), noise in all D.
  Row i is drawn from its own random stream (seed, i), so the file is identical for any
  rank count. Each rank generates its block of rows in slabs of bounded size and writes
  them with collective hyperslab writes, so 10^6 x 784 never sits on one rank.
*/
#include <basis/generate.h>
#include <basis/log.h>
#include <basis/options.h>
#include <basis/output.h>
#include <basis/h5io.h>
#include <basis/rng.h>
#include <math.h>

const char *const BasisGenerateTypes[] = {"manifold",          "circles",         "moons",
                                          "BasisGenerateType", "BASIS_GENERATE_", NULL};

/* Latent spread of each class around its centre; centres sit on a sphere of radius 1.5,
   so neighbouring classes overlap slightly. */
#define MANIFOLD_CLASS_SPREAD  0.35
#define MANIFOLD_CENTRE_RADIUS 1.5

/* Fixed parameters of the manifold map, derived from the seed alone (same on all ranks). */
typedef struct {
  PetscInt latent, D, classes;
  double  *w;       /* [D][latent] frequencies */
  double  *b;       /* [D] phases */
  double  *centres; /* [classes][latent] */
} Manifold;

static PetscErrorCode ManifoldCreate(const BasisGenerateParams *p, Manifold *m)
{
  BasisRng rng;

  PetscFunctionBeginUser;
  m->latent  = p->latent;
  m->D       = p->D;
  m->classes = p->classes;
  PetscCall(PetscMalloc3((size_t)p->D * p->latent, &m->w, p->D, &m->b, (size_t)p->classes * p->latent,
                         &m->centres));
  BasisRngSeed(&rng, (uint64_t)p->seed, 0);
  /* Frequencies ~ N(0, 1/2): a few oscillations across the latent range, so the lifted
     manifold is curved but neighbourhoods stay well sampled. */
  for (PetscInt j = 0; j < p->D * p->latent; j++) m->w[j] = sqrt(0.5) * BasisRngNormal(&rng);
  for (PetscInt j = 0; j < p->D; j++) m->b[j] = 2.0 * M_PI * BasisRngUniform(&rng);
  for (PetscInt c = 0; c < p->classes; c++) {
    double norm = 0.0, *z = m->centres + c * p->latent;
    for (PetscInt a = 0; a < p->latent; a++) {
      z[a] = BasisRngNormal(&rng);
      norm += z[a] * z[a];
    }
    for (PetscInt a = 0; a < p->latent; a++) z[a] *= MANIFOLD_CENTRE_RADIUS / sqrt(norm);
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode ManifoldDestroy(Manifold *m)
{
  PetscFunctionBeginUser;
  PetscCall(PetscFree3(m->w, m->b, m->centres));
  PetscFunctionReturn(0);
}

/*
  BasisGenerateRows - rows [start, start+n) of the data set described by p.

  Not collective. Output: x [n][D], labels [n]. Row i depends only on (p, i).
*/
PetscErrorCode BasisGenerateRows(const BasisGenerateParams *p, PetscInt start, PetscInt n, float x[],
                                 int labels[])
{
  Manifold man   = {0};
  double   scale = 1.0;

  PetscFunctionBeginUser;
  if (p->type == BASIS_GENERATE_MANIFOLD) {
    PetscCall(ManifoldCreate(p, &man));
    scale = sqrt(2.0 / (double)p->D); /* unit expected squared norm of the lifted point */
  }
  for (PetscInt i = 0; i < n; i++) {
    BasisRng rng;
    float   *xi = x + (size_t)i * p->D;
    int      c;

    BasisRngSeed(&rng, (uint64_t)p->seed, BASIS_STREAM_GENERATE + (uint64_t)(start + i));
    c = (int)BasisRngInt(&rng, p->classes);
    switch (p->type) {
    case BASIS_GENERATE_MANIFOLD: {
      double z[16];
      for (PetscInt a = 0; a < p->latent; a++)
        z[a] = man.centres[c * p->latent + a] + MANIFOLD_CLASS_SPREAD * BasisRngNormal(&rng);
      for (PetscInt j = 0; j < p->D; j++) {
        double t = man.b[j];
        for (PetscInt a = 0; a < p->latent; a++) t += man.w[j * p->latent + a] * z[a];
        xi[j] = (float)(scale * cos(t) + p->noise * scale * BasisRngNormal(&rng));
      }
    } break;
    case BASIS_GENERATE_CIRCLES: {
      double theta = 2.0 * M_PI * BasisRngUniform(&rng), r = 1.0 + c;
      for (PetscInt j = 0; j < p->D; j++) xi[j] = (float)(p->noise * BasisRngNormal(&rng));
      xi[0] += (float)(r * cos(theta));
      if (p->D > 1) xi[1] += (float)(r * sin(theta));
    } break;
    case BASIS_GENERATE_MOONS: {
      double t = M_PI * BasisRngUniform(&rng), u = c ? 1.0 - cos(t) : cos(t), v = c ? 0.5 - sin(t) : sin(t);
      for (PetscInt j = 0; j < p->D; j++) xi[j] = (float)(p->noise * BasisRngNormal(&rng));
      xi[0] += (float)u;
      if (p->D > 1) xi[1] += (float)v;
    } break;
    }
    labels[i] = c;
  }
  if (p->type == BASIS_GENERATE_MANIFOLD) PetscCall(ManifoldDestroy(&man));
  PetscFunctionReturn(0);
}

/* The generator's parameters as root attributes, named after generate's options. */
static PetscErrorCode GenerateWriteAttributes(hid_t file, const BasisGenerateParams *p)
{
  double noise = p->noise;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrWriteString(file, "generator", BasisGenerateTypes[p->type]));
  PetscCall(BasisH5AttrWriteInt(file, "generator_n", 1, &p->N));
  PetscCall(BasisH5AttrWriteInt(file, "generator_d", 1, &p->D));
  PetscCall(BasisH5AttrWriteInt(file, "generator_classes", 1, &p->classes));
  PetscCall(BasisH5AttrWriteInt(file, "generator_data_seed", 1, &p->seed));
  PetscCall(BasisH5AttrWriteInt(file, "generator_latent", 1, &p->latent));
  PetscCall(BasisH5AttrWriteDouble(file, "generator_noise", 1, &noise));
  PetscFunctionReturn(0);
}

/*
  BasisGenerateMain - `basis generate`: write /features (N x D float32) and /labels, and
  the generator's parameters as root attributes generator (the -type), generator_n,
  generator_d, generator_classes, generator_data_seed, generator_latent, generator_noise.

  Collective on comm. Options: -type -n -d -classes -noise -latent -data_seed (formerly
  -seed) -output -force
*/
PetscErrorCode BasisGenerateMain(MPI_Comm comm)
{
  BasisGenerateParams p                          = {BASIS_GENERATE_MANIFOLD, 10000, 784, 10, 0.1, 42, 2};
  char                output[PETSC_MAX_PATH_LEN] = "data/generated.h5";
  PetscBool           force                      = PETSC_FALSE, has_data_seed;
  PetscMPIInt         size, rank;
  PetscInt            rstart, n, slab, nslabs, done = 0;
  size_t              nonfinite = 0; /* features that overflowed float32 */
  float              *x;
  int                *labels;
  BasisOutput         out;
  hid_t               fdset, ldset;
  PetscLogDouble      t0, tlast;

  PetscFunctionBeginUser;
  PetscOptionsBegin(comm, NULL, "basis generate: synthetic labelled data", NULL);
  PetscCall(BasisOptionsEnum("-type", "Data set shape", NULL, BasisGenerateTypes, (PetscEnum)p.type,
                             (PetscEnum *)&p.type, NULL));
  PetscCall(PetscOptionsInt("-n", "Number of points N", NULL, p.N, &p.N, NULL));
  PetscCall(PetscOptionsInt("-d", "Number of features D", NULL, p.D, &p.D, NULL));
  PetscCall(PetscOptionsInt("-classes", "Number of classes", NULL, p.classes, &p.classes, NULL));
  PetscCall(PetscOptionsReal("-noise", "Noise standard deviation (relative to the signal)", NULL, p.noise,
                             &p.noise, NULL));
  PetscCall(PetscOptionsInt("-latent", "Manifold: latent dimension (1-16)", NULL, p.latent, &p.latent, NULL));
  /* -seed is the old name of -data_seed (0.2): the data's seed, not the training seed that
     -seed means for train. One options file often serves every command (jobs/pipeline.opts):
     when it sets both, -seed is train's and -data_seed wins here, without a warning; -seed
     alone still seeds the data, with PETSc's deprecation warning. */
  PetscCall(PetscOptionsHasName(NULL, NULL, "-data_seed", &has_data_seed));
  if (!has_data_seed)
    PetscCall(PetscOptionsDeprecated("-seed", "-data_seed", "0.2",
                                     "the data's seed is -data_seed; -seed is the training seed of train"));
  PetscCall(PetscOptionsInt("-data_seed", "Random seed of the data (every row's stream)", NULL, p.seed,
                            &p.seed, NULL));
  PetscCall(PetscOptionsString("-output", "Output HDF5 file", NULL, output, output, sizeof(output), NULL));
  PetscCall(PetscOptionsBool("-force", "Overwrite an existing output", NULL, force, &force, NULL));
  PetscOptionsEnd();
  {
    PetscBool help;
    PetscCall(BasisHelpRequested(&help));
    if (help) PetscFunctionReturn(0);
  }
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCheck(p.N >= size, comm, PETSC_ERR_ARG_OUTOFRANGE, "-n %d must be at least the number of ranks %d",
             (int)p.N, size);
  PetscCheck(p.D >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-d %d must be at least 1", (int)p.D);
  /* 1e30: the noise times a normal deviate (|z| < 40) must stay far inside float32's range */
  PetscCheck(p.noise >= 0 && p.noise <= 1e30, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-noise %g must be a number from 0 to 1e30", (double)p.noise);
  PetscCheck(p.latent >= 1 && p.latent <= 16, comm, PETSC_ERR_ARG_OUTOFRANGE, "-latent %d must be in 1..16",
             (int)p.latent);
  PetscCheck(p.classes >= 1 && p.classes <= 1000, comm, PETSC_ERR_ARG_OUTOFRANGE,
             "-classes %d must be in 1..1000", (int)p.classes);
  PetscCheck(p.type != BASIS_GENERATE_MOONS || p.classes == 2, comm, PETSC_ERR_ARG_WRONG,
             "-type moons has exactly 2 classes; pass -classes 2");

  PetscCall(PetscLogEventBegin(BASIS_Generate, 0, 0, 0, 0));
  PetscCall(PetscTime(&t0));
  tlast = t0;
  PetscCall(BasisOutputCreate(comm, output, force, NULL, &out));
  PetscCall(BasisH5CreateMatrix(out.file, "features", p.N, p.D, H5T_IEEE_F32LE, &fdset));
  PetscCall(BasisH5CreateMatrix(out.file, "labels", p.N, 0, H5T_STD_I32LE, &ldset));
  BasisBlockRange(p.N, size, rank, &rstart, &n);
  slab = PetscMax(1, (PetscInt)((size_t)(32 << 20) / ((size_t)p.D * sizeof(float)))); /* 32 MiB of rows */
  slab = PetscMin(slab, PetscMax(n, 1));
  PetscCall(PetscMalloc2((size_t)slab * p.D, &x, slab, &labels));
  nslabs = (n + slab - 1) / slab;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nslabs, 1, MPIU_INT, MPI_MAX, comm));
  for (PetscInt s = 0; s < nslabs; s++) {
    PetscInt       lo = PetscMin(s * slab, n), cnt = PetscMin(slab, n - lo);
    PetscLogDouble now;

    PetscCall(BasisGenerateRows(&p, rstart + lo, cnt, x, labels));
    for (size_t i = 0; i < (size_t)cnt * p.D; i++) nonfinite += !isfinite(x[i]);
    BasisCheckAll(comm, nonfinite == 0, PETSC_ERR_FP,
                  "generate: non-finite features (float32 overflow) with -noise %g; lower -noise",
                  (double)p.noise);
    PetscCall(BasisH5WriteRows(comm, fdset, rstart + lo, cnt, p.D, H5T_NATIVE_FLOAT, x));
    PetscCall(BasisH5WriteRows(comm, ldset, rstart + lo, cnt, 1, H5T_NATIVE_INT, labels));
    done += cnt;
    PetscCall(PetscTime(&now));
    if (now - tlast > 5.0 || s == nslabs - 1) { /* progress every 5 s on long runs */
      double frac = (double)done / (double)PetscMax(n, 1);
      PetscCall(PetscPrintf(comm, "generate: %5.1f%% of rank 0's rows, %.1f s elapsed, ~%.0f s left\n",
                            100.0 * frac, now - t0, frac > 0 ? (now - t0) * (1.0 - frac) / frac : 0.0));
      tlast = now;
    }
  }
  PetscCall(PetscFree2(x, labels));
  PetscCall(GenerateWriteAttributes(out.file, &p));
  BasisCallH5(H5Dclose(fdset));
  BasisCallH5(H5Dclose(ldset));
  PetscCall(BasisOutputCommit(&out));
  PetscCall(PetscLogEventEnd(BASIS_Generate, 0, 0, 0, 0));
  PetscCall(PetscPrintf(comm, "generate: wrote %s (%d x %d %s, %d classes)\n", output, (int)p.N, (int)p.D,
                        BasisGenerateTypes[p.type], (int)p.classes));
  PetscFunctionReturn(0);
}
