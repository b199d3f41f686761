/*
  output.c - atomic output files (include/basis/output.h).

  Every file basis writes goes through one protocol, so that nothing is lost and nothing
  looks complete unless it is:
    1. check the path (rank 0, broadcast): not an input (same inode), not a directory,
       FIFO, device or socket (nor a link to one), not held by a live run's lock;
    2. take the lock "<path>.lock" (written whole under a private name, then link(): atomic
       also on NFS and Lustre; holds "basis HOST PID"): a second run writing the same output is refused,
  naming the first. A lock left by a killed run on this host is stale (its pid is gone) and is taken over; one
  from another host is reported with how to clear it;
    3. create "<path>.<run>.partial" exclusively (run = job id or pid, and a random
       word), so two runs never share a temporary and a user's own file is never
       truncated or deleted;
    4. commit: reserve the file's space (fallocate, so a full disk fails here, before
       the collective flush, instead of inside it on some ranks only), mark it
       "basis_complete", flush and close; every step's verdict agreed across ranks
       (MPI_Allreduce) before the next; then rank 0 renames it and drops the lock.
  On any failure the temporary is truncated (freeing its space, so HDF5's closing flush
  cannot fail half-way), closed on every rank and deleted, and the lock is released.
  A file written more than once by one run (train's checkpoints) is held for the whole run
  (BasisOutputHold): its lock is taken once, at the start, and the run's own writes reuse it,
  so no other run can write the file between two checkpoints or replace the last one.
  Outputs still open when an error unwinds to main are removed by BasisOutputCleanupAll
  (not collective) and closed by BasisOutputCloseAll (collective, once all ranks are on
  the error path), so that HDF5 never flushes a file from inside MPI_Finalize.
*/
#define _GNU_SOURCE
#include <basis/output.h>
#include <basis/error.h>
#include <basis/h5io.h>
#include <errno.h>
#include <glob.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN (2 * PETSC_MAX_PATH_LEN + 512)

/* Outputs that are open; removed if an error unwinds to main. A copy of what the clean-up
   needs, not a pointer to the caller's BasisOutput: that is usually a local variable of a
   function the error has already returned from. owner only identifies the entry. */
#define BASIS_MAX_OPEN_OUTPUTS 8
static struct {
  const BasisOutput *owner;
  MPI_Comm           comm;
  hid_t              file;
  PetscBool          locked, hold; /* hold: a run-long lock (BasisOutputHold), no file */
  char               path[PETSC_MAX_PATH_LEN], tmp[PETSC_MAX_PATH_LEN], lock[PETSC_MAX_PATH_LEN];
  hsize_t            reserved; /* bytes of tmp already reserved (BasisOutputReserveSpace) */
} open_outputs[BASIS_MAX_OPEN_OUTPUTS];

/* Whether this process holds path's lock for its whole run (BasisOutputHold). */
static PetscBool HeldHere(const char *path)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (open_outputs[i].owner && open_outputs[i].hold && open_outputs[i].locked &&
        !strcmp(open_outputs[i].path, path))
      return PETSC_TRUE;
  return PETSC_FALSE;
}

/* True when a and b name the same file: same device and inode (hard links, symlinks,
   "./x" and "x" alike), or the same resolved path. */
static PetscBool SameFile(const char *a, const char *b)
{
  struct stat sa, sb;
  char        ra[PATH_MAX], rb[PATH_MAX];

  if (!strcmp(a, b)) return PETSC_TRUE;
  if (!stat(a, &sa) && !stat(b, &sb)) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  if (!realpath(a, ra) || !realpath(b, rb)) return PETSC_FALSE;
  return strcmp(ra, rb) ? PETSC_FALSE : PETSC_TRUE;
}

static const char *FileKind(mode_t m)
{
  return S_ISDIR(m)                 ? "a directory"
         : S_ISFIFO(m)              ? "a FIFO"
         : S_ISCHR(m) || S_ISBLK(m) ? "a device"
         : S_ISSOCK(m)              ? "a socket"
                                    : "not a regular file";
}

/* The bytes this process may still write on the file system holding path (root may use
   the blocks reserved for it), or -1 when it does not say (some report no size at all). */
static double FreeBytes(const char *path)
{
  struct statvfs vfs;

  if (statvfs(path, &vfs) || vfs.f_blocks == 0) return -1;
  return (double)(geteuid() ? vfs.f_bavail : vfs.f_bfree) * vfs.f_frsize;
}

/* A hint on why a write to path failed, from its file system's free space. */
static void SpaceHint(const char *path, char *hint, size_t len)
{
  char   dir[PETSC_MAX_PATH_LEN];
  double have;

  snprintf(dir, sizeof(dir), "%s", path);
  have = FreeBytes(dirname(dir));
  if (have >= 0 && have < 16.0 * (1 << 20))
    snprintf(hint, len, "its file system is full (%.0f KiB free)", have / 1024);
  else
    snprintf(hint, len, "an I/O error, the disk full or the quota exceeded");
}

/* Whether process pid of this host has ended: it does not exist, or it is a zombie (killed
   and not yet reaped by its parent -- e.g. ranks of a job just killed with kill -9, whose
   mpiexec has not waited for them yet: they hold no files any more). */
static PetscBool ProcessGone(pid_t pid)
{
  char  stat[64], line[512], *close;
  FILE *f;

  if (kill(pid, 0) && errno == ESRCH) return PETSC_TRUE;
  snprintf(stat, sizeof(stat), "/proc/%ld/stat", (long)pid);
  if (!(f = fopen(stat, "r"))) return PETSC_FALSE; /* no /proc: alive as far as we can tell */
  close = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL; /* "pid (comm) S ..." */
  fclose(f);
  return close && (close[2] == 'Z' || close[2] == 'X') ? PETSC_TRUE : PETSC_FALSE;
}

/* This run's Slurm incarnation, "JOBID.RESTARTS", or "" outside Slurm. A job requeued
   after its node died keeps its job id and counts one more restart. */
static void SlurmIncarnation(char *buf, size_t len)
{
  const char *job = getenv("SLURM_JOB_ID"), *restarts = getenv("SLURM_RESTART_COUNT");

  if (job && job[0])
    snprintf(buf, len, "%s.%s", job, restarts && restarts[0] ? restarts : "0");
  else
    buf[0] = 0;
}

/*
  Who holds lock (rank 0 only). Returns 0 when there is no lock or it is stale (written by
  a process of this host that no longer exists; *stale set), else fills msg.
*/
static int LockHeld(const char *path, const char *lock, PetscBool *stale, char *msg, size_t len)
{
  char  host[256] = "", who[256] = "", job[64] = "", mine[64];
  long  pid = 0;
  FILE *f;
  int   n;

  *stale = PETSC_FALSE;
  if (!(f = fopen(lock, "r"))) return 0;
  n = fscanf(f, "basis %255s %ld %63s", who, &pid, job);
  fclose(f);
  if (n == 3) n = 2; /* the Slurm incarnation is optional */
  gethostname(host, sizeof(host) - 1);
  if (n != 2 || pid <= 0) {
    snprintf(msg, len,
             "output %s is locked by %s, which is not a lock basis wrote (or is being written); "
             "if no other run writes %s, remove %s",
             path, lock, path, lock);
    return 1;
  }
  if (!strcmp(who, host) && ProcessGone((pid_t)pid)) {
    *stale = PETSC_TRUE;
    return 0;
  }
  /* taken by an earlier incarnation of this Slurm job (same job id, fewer restarts): Slurm
     requeues a job only once it has ended, so that run is gone, whatever node it ran on */
  SlurmIncarnation(mine, sizeof(mine));
  if (job[0] && mine[0] && strcmp(job, mine) && !strncmp(job, mine, (size_t)(strchr(mine, '.') - mine + 1))) {
    *stale = PETSC_TRUE;
    return 0;
  }
  snprintf(msg, len,
           "output %s is being written by another basis run (pid %ld on host %s; lock %s); wait for it "
           "to finish or write elsewhere. If that run no longer exists, remove %s",
           path, pid, who, lock, lock);
  return 1;
}

/* Remove a stale lock and the temporary files its run left (killed before it could clean up):
   "<path>.<pid>-<random>.partial" or "<path>.<job>-<pid>-<random>.partial" of that pid. */
static void RemoveStaleLock(const char *path, const char *lock)
{
  char   who[256], pattern[PETSC_MAX_PATH_LEN + 64];
  long   pid = 0;
  FILE  *f   = fopen(lock, "r");
  glob_t g;

  if (f) {
    if (fscanf(f, "basis %255s %ld", who, &pid) != 2) pid = 0;
    fclose(f);
  }
  unlink(lock);
  for (int form = 0; pid > 0 && form < 2; form++) {
    snprintf(pattern, sizeof(pattern),
             form ? "%s.*-%ld-\?\?\?\?\?\?\?\?.partial" : "%s.%ld-\?\?\?\?\?\?\?\?.partial", path, pid);
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
    globfree(&g);
  }
}

/* Looks at a held lock before refusing (x 0.1 s; see LockTake). */
#define LOCK_GRACE_TRIES 50

/* Take the lock (rank 0 only); msg set on failure. A stale lock is replaced. The lock is
   written complete under a private name and hard-linked to its name: link() is atomic
   (also on NFS), so no other run ever reads a half-written lock. */
static void LockTake(const char *path, const char *lock, PetscBool *locked, char *msg, size_t len)
{
  char host[256] = "", line[400], mine[PETSC_MAX_PATH_LEN + 64], job[64];
  int  fd, n;

  *locked = PETSC_FALSE;
  gethostname(host, sizeof(host) - 1);
  SlurmIncarnation(job, sizeof(job));
  snprintf(mine, sizeof(mine), "%s.%ld", lock, (long)getpid());
  n  = snprintf(line, sizeof(line), "basis %s %ld%s%s\n", host, (long)getpid(), job[0] ? " " : "", job);
  fd = open(mine, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0 || write(fd, line, (size_t)n) != n || close(fd)) {
    char hint[128];
    SpaceHint(lock, hint, sizeof(hint));
    if (fd >= 0) unlink(mine);
    snprintf(msg, len, "cannot write the lock file %s for output %s: %s", mine, path,
             errno == ENOSPC || errno == EDQUOT ? hint : strerror(errno));
    return;
  }
  /* A held lock is looked at again for up to LOCK_GRACE_TRIES x 0.1 s: the ranks of a run
     killed with kill -9 a moment ago may still be exiting (the lock is then released by
     their death, not by them), and a -resume started right after must not be refused. */
  for (int attempt = 0, held = 0; !*locked && attempt < 2 + LOCK_GRACE_TRIES; attempt++) {
    PetscBool stale;
    if (msg[0]) {
      if (!held || attempt >= 2 + LOCK_GRACE_TRIES - 1) break;
      msg[0] = 0, held = 0;
      usleep(100000);
    }
    if (!link(mine, lock)) {
      *locked = PETSC_TRUE;
    } else if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS) { /* no hard links here */
      int lfd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (lfd >= 0) *locked = (PetscBool)(write(lfd, line, (size_t)n) == n), close(lfd);
      if (lfd >= 0 && !*locked) unlink(lock);
      if (lfd < 0 && errno == EEXIST && !LockHeld(path, lock, &stale, msg, len) && stale)
        RemoveStaleLock(path, lock);
      if (lfd < 0 && errno != EEXIST)
        snprintf(msg, len, "cannot create the lock file %s for output %s: %s", lock, path, strerror(errno));
    } else if (errno != EEXIST) {
      snprintf(msg, len, "cannot create the lock file %s for output %s: %s", lock, path, strerror(errno));
    } else if (!LockHeld(path, lock, &stale, msg, len) && stale) {
      RemoveStaleLock(path, lock); /* its run was killed; take over */
    } else if (msg[0]) {
      held = 1;
    }
  }
  unlink(mine);
  if (!*locked && !msg[0])
    snprintf(msg, len, "cannot take the lock %s for output %s: another run keeps creating it", lock, path);
}

/* Temporary name "<path>.<run>.partial": run = the batch job id (or the pid) and a random
   word, so runs never share one. Rank 0 only. */
static void TempName(const char *path, char *tmp, size_t len)
{
  const char  *job = getenv("SLURM_JOB_ID");
  unsigned int r   = 0;
  FILE        *f   = fopen("/dev/urandom", "r");

  if (!job) job = getenv("PBS_JOBID");
  if (!f || fread(&r, sizeof(r), 1, f) != 1) r = (unsigned int)time(NULL) ^ ((unsigned int)getpid() << 16);
  if (f) fclose(f);
  if (job)
    snprintf(tmp, len, "%s.%s-%ld-%08x.partial", path, job, (long)getpid(), r);
  else
    snprintf(tmp, len, "%s.%ld-%08x.partial", path, (long)getpid(), r);
}

/* The checks of BasisOutputCheckPathOption, on rank 0; msg set when the path is refused. */
static void CheckPathLocal(const char *option, const char *path, PetscBool force, const char *const inputs[],
                           char *msg, size_t len)
{
  struct stat st;
  char        dir[PETSC_MAX_PATH_LEN], lock[PETSC_MAX_PATH_LEN];
  PetscBool   stale;

  if (!path || !path[0]) {
    snprintf(msg, len, "no output file given: pass %s FILE", option);
    return;
  }
  if (strlen(path) + 40 >= PETSC_MAX_PATH_LEN) {
    snprintf(msg, len, "output path given to %s is %d characters long; give a shorter one", option,
             (int)strlen(path));
    return;
  }
  for (PetscInt i = 0; inputs && inputs[i]; i++)
    if (inputs[i][0] && SameFile(path, inputs[i])) {
      snprintf(msg, len, "output %s is also an input; choose another %s%s%s%s", path, option,
               strcmp(path, inputs[i]) ? " (it is the same file as " : "",
               strcmp(path, inputs[i]) ? inputs[i] : "", strcmp(path, inputs[i]) ? ")" : "");
      return;
    }
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      snprintf(msg, len, "output %s is a directory; give a file name", path);
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      snprintf(msg, len, "output %s is %s, not a regular file; basis never replaces one: give another %s",
               path, FileKind(st.st_mode), option);
      return;
    }
    if (!force) {
      snprintf(msg, len, "output %s exists; pass -force to overwrite it", path);
      return;
    }
  } else if (lstat(path, &st) == 0) {
    snprintf(msg, len, "output %s is a broken symbolic link; remove it or give another %s", path, option);
    return;
  }
  snprintf(dir, sizeof(dir), "%s", path);
  if (access(dirname(dir), W_OK | X_OK) != 0) {
    snprintf(msg, len, "cannot write %s %s: directory %s is %s", option, path, dir,
             errno == ENOENT ? "missing (create it first)" : "not writable");
    return;
  }
  snprintf(lock, sizeof(lock), "%s.lock", path);
  if (!HeldHere(path)) LockHeld(path, lock, &stale, msg, len);
}

/* The last path component of a temporary name (what basis_temporary_name records). */
static const char *TmpBase(const char *tmp)
{
  const char *slash = strrchr(tmp, '/');
  return slash ? slash + 1 : tmp;
}

/*
  BasisOutputIsTemporary - whether the open file `file`, found at `path`, is an output that was
  never committed: it is still under the temporary name its writer recorded (the writer was
  killed between marking it complete and renaming it). Not collective.
*/
PetscErrorCode BasisOutputIsTemporary(hid_t file, const char *path, PetscBool *temporary)
{
  char      name[PETSC_MAX_PATH_LEN];
  PetscBool found;

  PetscFunctionBeginUser;
  PetscCall(BasisH5AttrReadString(file, "basis_temporary_name", sizeof(name), name, &found));
  *temporary = (PetscBool)(found && !strcmp(name, TmpBase(path)));
  PetscFunctionReturn(0);
}

/*
  BasisOutputCheckPathOption - refuse an output path before any work is done.

  Collective on comm. Rank 0 looks at the file system and broadcasts its verdict, so every
  rank raises the same error.

  Input:
    option - the option that names it ("-output", "-model", "-json"), for the messages
    path   - the output file; refused when it is missing, an input (same file, by inode),
             a directory, FIFO, device or socket (or a link to one), exists without force,
             its directory is not writable, or another live run holds its lock
    force  - overwrite an existing regular file
    inputs - NULL-terminated list of files this command reads (may be NULL)
*/
PetscErrorCode BasisOutputCheckPathOption(MPI_Comm comm, const char *option, const char *path,
                                          PetscBool force, const char *const inputs[])
{
  char        msg[MSG_LEN] = "";
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) CheckPathLocal(option, path, force, inputs, msg, sizeof(msg));
  PetscCallMPI(MPI_Bcast(msg, sizeof(msg), MPI_CHAR, 0, comm));
  PetscCheck(!msg[0], comm, PETSC_ERR_FILE_OPEN, "%s", msg);
  PetscFunctionReturn(0);
}

/* BasisOutputCheckPath - BasisOutputCheckPathOption for a file named by -output. */
PetscErrorCode BasisOutputCheckPath(MPI_Comm comm, const char *path, PetscBool force,
                                    const char *const inputs[])
{
  PetscFunctionBeginUser;
  PetscCall(BasisOutputCheckPathOption(comm, "-output", path, force, inputs));
  PetscFunctionReturn(0);
}

static void Remember(const BasisOutput *out)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (!open_outputs[i].owner) {
      open_outputs[i].owner    = out;
      open_outputs[i].comm     = out->comm;
      open_outputs[i].file     = out->file;
      open_outputs[i].locked   = out->locked;
      open_outputs[i].hold     = PETSC_FALSE;
      open_outputs[i].reserved = 0;
      snprintf(open_outputs[i].path, sizeof(open_outputs[i].path), "%s", out->path);
      snprintf(open_outputs[i].tmp, sizeof(open_outputs[i].tmp), "%s", out->tmp);
      snprintf(open_outputs[i].lock, sizeof(open_outputs[i].lock), "%s", out->lock);
      return;
    }
}

static void Forget(const BasisOutput *out)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (open_outputs[i].owner == out) open_outputs[i].owner = NULL;
}

/*
  BasisOutputReserve - check the path, take its lock and choose the temporary name, for a
  file the caller writes itself (not HDF5, e.g. JSON): rank 0 writes out->tmp (open it
  with O_EXCL, fopen mode "wx"), then every rank calls BasisOutputCommit (or Abort).

  Collective on comm. out->file is -1.
*/
PetscErrorCode BasisOutputReserve(MPI_Comm comm, const char *option, const char *path, PetscBool force,
                                  const char *const inputs[], BasisOutput *out)
{
  char        msg[MSG_LEN] = "";
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCall(PetscMemzero(out, sizeof(*out)));
  out->file = -1;
  out->comm = comm;
  PetscCall(BasisOutputCheckPathOption(comm, option, path, force, inputs));
  PetscCall(PetscStrncpy(out->path, path, sizeof(out->path)));
  PetscCall(PetscSNPrintf(out->lock, sizeof(out->lock), "%s.lock", path));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    TempName(path, out->tmp, sizeof(out->tmp));
    if (!HeldHere(path)) LockTake(path, out->lock, &out->locked, msg, sizeof(msg));
  }
  PetscCallMPI(MPI_Bcast(msg, sizeof(msg), MPI_CHAR, 0, comm));
  PetscCheck(!msg[0], comm, PETSC_ERR_FILE_OPEN, "%s", msg);
  PetscCallMPI(MPI_Bcast(out->tmp, sizeof(out->tmp), MPI_CHAR, 0, comm));
  Remember(out);
  PetscFunctionReturn(0);
}

/*
  BasisOutputHold - take path's lock for a run that writes path several times (train's
  checkpoints and final model): until BasisOutputRelease no other basis run can write path,
  and this process's own writes of path (BasisOutputCreate, BasisOutputReserve, given the
  same path string) use the held lock instead of taking it.

  Collective on comm. The checks are BasisOutputCheckPathOption's; force as there.
*/
PetscErrorCode BasisOutputHold(MPI_Comm comm, const char *option, const char *path, PetscBool force,
                               const char *const inputs[], BasisOutput *hold)
{
  PetscFunctionBeginUser;
  PetscCall(BasisOutputReserve(comm, option, path, force, inputs, hold));
  hold->tmp[0] = 0; /* nothing is written under the hold itself */
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
    if (open_outputs[i].owner == hold) open_outputs[i].hold = PETSC_TRUE, open_outputs[i].tmp[0] = 0;
  PetscFunctionReturn(0);
}

/*
  BasisOutputRelease - drop a lock taken by BasisOutputHold. Not collective: rank 0 of
  hold->comm removes the lock file. NULL-tolerant, idempotent.
*/
void BasisOutputRelease(BasisOutput *hold)
{
  PetscMPIInt rank = 0;

  if (!hold || !hold->lock[0]) return;
  MPI_Comm_rank(hold->comm, &rank);
  if (rank == 0 && hold->locked) unlink(hold->lock);
  hold->locked = PETSC_FALSE;
  Forget(hold);
}

/*
  BasisOutputCreate - check the path, take its lock and create "<path>.<run>.partial" for
  parallel writing.

  Collective on comm. The file is opened with the MPI-IO driver on comm, created
  exclusively (an existing file of that name is never truncated).
*/
PetscErrorCode BasisOutputCreate(MPI_Comm comm, const char *path, PetscBool force, const char *const inputs[],
                                 BasisOutput *out)
{
  hid_t       fapl;
  PetscMPIInt rank;
  char        hint[128] = "";

  PetscFunctionBeginUser;
  PetscCall(BasisOutputReserve(comm, "-output", path, force, inputs, out));
  Forget(out);
  fapl = H5Pcreate(H5P_FILE_ACCESS);
  BasisCallH5(fapl);
  BasisCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  /* 1.8+ file format: the superblock and object headers carry checksums, so a damaged
     file is refused by its reader instead of misread (tests/fuzz_h5.py) */
  BasisCallH5(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST));
  /* closing the file closes what is still open in it (the error path closes files whose
     datasets the unwinding callers left open) */
  BasisCallH5(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
  out->file = H5Fcreate(out->tmp, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
  BasisCallH5(H5Pclose(fapl));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0 && out->file < 0) SpaceHint(out->tmp, hint, sizeof(hint));
  {
    int ok = out->file >= 0, all;
    PetscCallMPI(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm));
    if (!all) {
      if (out->file >= 0) H5Fclose(out->file);
      out->file = -1;
      if (rank == 0 && out->locked) unlink(out->lock);
      out->locked = PETSC_FALSE;
      PetscCallMPI(MPI_Bcast(hint, sizeof(hint), MPI_CHAR, 0, comm));
      SETERRQ(comm, PETSC_ERR_FILE_OPEN,
              "cannot create %s (for output %s): %s; free space or write elsewhere", out->tmp, path, hint);
    }
  }
  Remember(out);
  PetscFunctionReturn(0);
}

/* Rank 0: reserve the blocks of tmp up to size (KEEP_SIZE: the file's length is HDF5's
   business); msg set when the file system has no room. A request larger than the free
   space is refused before it is made, and a refused fallocate's blocks are given back
   (ext4 keeps what it managed to allocate): a failed reservation never leaves the disk
   full for other writers, and the message states the free space as it is. Other errors
   (EOPNOTSUPP on some network file systems) leave the check to the writes themselves. */
static void ReserveBytes(const char *path, const char *tmp, hsize_t size, char *msg, size_t len)
{
  int         fd, err = 0;
  struct stat st;
  double      have, need;

  if (size == 0 || (fd = open(tmp, O_WRONLY)) < 0) return;
  need = fstat(fd, &st) ? (double)size : (double)size - 512.0 * st.st_blocks; /* beyond what it holds */
  have = FreeBytes(tmp);
  if (have >= 0 && need > have)
    err = ENOSPC;
  else if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size)) {
    err = errno;
    if ((err == ENOSPC || err == EDQUOT) && !fstat(fd, &st) && (off_t)size > st.st_size) {
      /* give back what it allocated past the file's end (best effort: the output is abandoned) */
      int punched =
          fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, (off_t)size - st.st_size);
      (void)punched;
    }
    have = FreeBytes(tmp);
  }
  close(fd);
  if (err == EDQUOT)
    snprintf(msg, len,
             "cannot write output %s (%.2f MiB): the disk quota is exceeded; free space or write it "
             "elsewhere",
             path, size / 1048576.0);
  else if (err == ENOSPC && have >= 0)
    snprintf(msg, len,
             "cannot write output %s (%.2f MiB): its file system has %.2f MiB free; free space or "
             "write it elsewhere",
             path, size / 1048576.0, have / 1048576.0);
  else if (err == ENOSPC)
    snprintf(msg, len,
             "cannot write output %s (%.2f MiB): its file system is full; free space or write it elsewhere",
             path, size / 1048576.0);
}

/* Rank 0: reserve tmp up to its HDF5 end of allocation, so that the metadata HDF5 still
   holds in memory cannot fail to fit when it is flushed. */
static void ReserveSpace(const BasisOutput *out, char *msg, size_t len)
{
  hsize_t size = 0;

  if (H5Fget_filesize(out->file, &size) < 0) return;
  ReserveBytes(out->path, out->tmp, size, msg, len);
}

/*
  BasisOutputReserveSpace - before writing rows to obj (a dataset of an output being
  written), reserve the whole file as HDF5 has allocated it, so that a full disk or an
  exceeded quota is one agreed error before any collective write instead of a write that
  fails on some ranks only (HDF5 then leaves the ranks in different collectives, or the
  MPI-IO layer loses the error and the rows stay zero).

  Collective on comm. A no-op for objects of files that are not outputs.
*/
PetscErrorCode BasisOutputReserveSpace(MPI_Comm comm, hid_t obj)
{
  char        name[PETSC_MAX_PATH_LEN], msg[MSG_LEN] = "";
  hid_t       f;
  hsize_t     size = 0;
  PetscMPIInt rank;
  int         slot = -1;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    f = H5Iget_file_id(obj);
    if (f >= 0 && H5Fget_name(f, name, sizeof(name)) > 0) {
      haddr_t off = H5Iget_type(obj) == H5I_DATASET ? H5Dget_offset(obj) : HADDR_UNDEF;
      if (off != HADDR_UNDEF) size = (hsize_t)off + H5Dget_storage_size(obj); /* the end of its rows */
      for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++)
        if (open_outputs[i].owner && !strcmp(open_outputs[i].tmp, name)) slot = i;
    }
    if (f >= 0) H5Idec_ref(f);
    if (slot >= 0 && size > open_outputs[slot].reserved) {
      ReserveBytes(open_outputs[slot].path, open_outputs[slot].tmp, size, msg, sizeof(msg));
      if (!msg[0]) open_outputs[slot].reserved = size;
    }
  }
  PetscCallMPI(MPI_Bcast(msg, sizeof(msg), MPI_CHAR, 0, comm));
  PetscCheck(!msg[0], comm, PETSC_ERR_FILE_WRITE, "%s", msg);
  PetscFunctionReturn(0);
}

/* Collective: truncate the temporary (rank 0; frees its space so the closing flush
   fits), close it on every rank, delete it and release the lock. Errors ignored. */
static PetscErrorCode Discard(BasisOutput *out)
{
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(out->comm, &rank));
  if (rank == 0 && out->file >= 0 && truncate(out->tmp, 0)) { /* nothing to free */
  }
  if (out->file >= 0) {
    PetscCallMPI(MPI_Barrier(out->comm));
    H5Fclose(out->file);
  }
  out->file = -1;
  if (rank == 0) {
    if (out->tmp[0]) unlink(out->tmp);
    if (out->locked) unlink(out->lock);
  }
  out->locked = PETSC_FALSE;
  Forget(out);
  PetscFunctionReturn(0);
}

/* Agree a step's verdict on out->comm; on failure rank 0's msg (or the default) is the
   message, the output is discarded and the error raised. */
static PetscErrorCode Agree(BasisOutput *out, int ok, char *msg, size_t len, const char *what)
{
  int         all;
  PetscMPIInt rank;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, out->comm));
  if (all) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_rank(out->comm, &rank));
  if (rank == 0 && !msg[0]) {
    char hint[128];
    SpaceHint(out->tmp, hint, sizeof(hint));
    snprintf(msg, len, "cannot write output %s (%s failed): %s; free space or write elsewhere", out->path,
             what, hint);
  }
  PetscCallMPI(MPI_Bcast(msg, (int)len, MPI_CHAR, 0, out->comm));
  PetscCall(Discard(out));
  SETERRQ(out->comm, PETSC_ERR_FILE_WRITE, "%s", msg);
}

/*
  BasisOutputCommit - mark the file complete, flush and close it, and rename it to its
  final name; every step agreed across ranks. On failure the temporary is removed and the
  error raised on out->comm (the same on every rank).

  Collective on out->comm.
*/
PetscErrorCode BasisOutputCommit(BasisOutput *out)
{
  PetscMPIInt rank;
  char        msg[MSG_LEN] = "";
  PetscInt    one          = 1;
  int         ok;

  PetscFunctionBeginUser;
  PetscCallMPI(MPI_Comm_rank(out->comm, &rank));
  if (out->file >= 0) {
    herr_t e;
    /* the mark goes in first, so the reservation covers its object header space */
    ok = BasisH5AttrWriteInt(out->file, "basis_complete", 1, &one) == 0;
    /* the name it has until the rename: a file still under it was never committed (killed
       between the mark and the rename), and readers refuse it (BasisOutputIsTemporary) */
    ok = ok && BasisH5AttrWriteString(out->file, "basis_temporary_name", TmpBase(out->tmp)) == 0;
    PetscCall(Agree(out, ok, msg, sizeof(msg), "marking it complete"));
    if (rank == 0) ReserveSpace(out, msg, sizeof(msg));
    PetscCall(Agree(out, !msg[0], msg, sizeof(msg), "reserving its space"));
    e = H5Fflush(out->file, H5F_SCOPE_GLOBAL);
    PetscCall(Agree(out, e >= 0, msg, sizeof(msg), "flushing it"));
    e         = H5Fclose(out->file);
    out->file = -1;
    PetscCall(Agree(out, e >= 0, msg, sizeof(msg), "closing it"));
  } else {
    PetscCallMPI(MPI_Barrier(out->comm)); /* rank 0 has written and closed the file */
  }
  if (rank == 0) {
    struct stat st;
    if (access(out->tmp, F_OK))
      snprintf(msg, sizeof(msg), "output %s: its temporary %s has disappeared; was it removed?", out->path,
               out->tmp);
    else if (!stat(out->path, &st) && !S_ISREG(st.st_mode)) /* appeared while we wrote */
      snprintf(msg, sizeof(msg), "output %s is now %s; basis never replaces one: give another name",
               out->path, FileKind(st.st_mode));
    else if (rename(out->tmp, out->path))
      snprintf(msg, sizeof(msg), "cannot rename %s to %s: %s", out->tmp, out->path, strerror(errno));
    if (msg[0]) unlink(out->tmp);
    if (out->locked) unlink(out->lock);
  }
  out->locked = PETSC_FALSE;
  Forget(out);
  PetscCallMPI(MPI_Bcast(msg, sizeof(msg), MPI_CHAR, 0, out->comm));
  PetscCheck(!msg[0], out->comm, PETSC_ERR_FILE_WRITE, "%s", msg);
  PetscFunctionReturn(0);
}

/*
  BasisOutputAbort - close and delete a partly written output and release its lock.
  Collective on out->comm.
*/
PetscErrorCode BasisOutputAbort(BasisOutput *out)
{
  PetscFunctionBeginUser;
  PetscCall(Discard(out));
  PetscFunctionReturn(0);
}

/*
  BasisOutputCleanupAll - delete every output still open (called by main after an error)
  and release its lock.

  Not collective: rank 0 of each output's communicator truncates (frees the space) and
  unlinks its temporary file. The HDF5 handles stay open for BasisOutputCloseAll.
*/
void BasisOutputCleanupAll(void)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++) {
    PetscMPIInt rank = 0;
    if (!open_outputs[i].owner) continue;
    MPI_Comm_rank(open_outputs[i].comm, &rank);
    if (rank == 0 && open_outputs[i].tmp[0]) {
      if (truncate(open_outputs[i].tmp, 0)) { /* already gone */
      }
      unlink(open_outputs[i].tmp);
    }
    if (rank == 0) {
      if (open_outputs[i].locked) unlink(open_outputs[i].lock);
    }
    open_outputs[i].locked = PETSC_FALSE;
  }
}

/*
  BasisOutputCloseAll - close the HDF5 files of outputs left open by an error, then
  every other HDF5 object (H5close), so that nothing is flushed from inside MPI_Finalize.

  Collective on PETSC_COMM_WORLD: call only when every rank is on the error path (after
  BasisOutputCleanupAll has freed the space).
*/
void BasisOutputCloseAll(void)
{
  for (int i = 0; i < BASIS_MAX_OPEN_OUTPUTS; i++) {
    if (!open_outputs[i].owner) continue;
    if (open_outputs[i].file >= 0) H5Fclose(open_outputs[i].file);
    open_outputs[i].owner = NULL;
  }
  H5close();
}
