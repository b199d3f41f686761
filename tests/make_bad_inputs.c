/*
  make_bad_inputs DIR - write small malformed data files for the error tests
  (cli_bad_input.sh). Serial; plain HDF5 calls, no basis code, so the files are made
  independently of the reader under test.
*/
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void Matrix(hid_t file, const char *name, int ndims, hsize_t d0, hsize_t d1, hid_t type,
                   const void *buf)
{
  hsize_t dims[2] = {d0, d1};
  hid_t   space   = H5Screate_simple(ndims, dims, NULL);
  hid_t   dset    = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (buf)
    H5Dwrite(dset, type == H5T_IEEE_F32LE ? H5T_NATIVE_FLOAT : type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  H5Dclose(dset);
  H5Sclose(space);
}

static hid_t Create(const char *dir, const char *name)
{
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

int main(int argc, char **argv)
{
  const char *dir = argc > 1 ? argv[1] : ".";
  float       x[40 * 4];
  int         labels[40];
  hid_t       f, strtype;
  char        path[4096];
  FILE       *txt;

  for (int i = 0; i < 40 * 4; i++) x[i] = (float)sin(0.37 * i);
  for (int i = 0; i < 40; i++) labels[i] = i % 3;

  f = Create(dir, "no_features.h5");
  Matrix(f, "data", 2, 40, 4, H5T_IEEE_F32LE, x);
  H5Fclose(f);

  f = Create(dir, "features_1d.h5");
  Matrix(f, "features", 1, 40, 0, H5T_IEEE_F32LE, x);
  H5Fclose(f);

  f       = Create(dir, "features_string.h5");
  strtype = H5Tcopy(H5T_C_S1);
  H5Tset_size(strtype, 8);
  Matrix(f, "features", 2, 40, 4, strtype, NULL);
  H5Tclose(strtype);
  H5Fclose(f);

  f = Create(dir, "zero_rows.h5");
  Matrix(f, "features", 2, 0, 4, H5T_IEEE_F32LE, NULL);
  H5Fclose(f);

  f = Create(dir, "zero_cols.h5");
  Matrix(f, "features", 2, 40, 0, H5T_IEEE_F32LE, NULL);
  H5Fclose(f);

  f = Create(dir, "labels_short.h5");
  Matrix(f, "features", 2, 40, 4, H5T_IEEE_F32LE, x);
  Matrix(f, "labels", 1, 39, 0, H5T_NATIVE_INT, labels);
  H5Fclose(f);

  x[7 * 4 + 2]  = NAN; /* row 7 */
  x[30 * 4 + 1] = INFINITY;
  f             = Create(dir, "nan.h5");
  Matrix(f, "features", 2, 40, 4, H5T_IEEE_F32LE, x);
  H5Fclose(f);

  f = Create(dir, "one_row.h5");
  Matrix(f, "features", 2, 1, 4, H5T_IEEE_F32LE, x);
  H5Fclose(f);

  snprintf(path, sizeof(path), "%s/not_hdf5.h5", dir);
  txt = fopen(path, "w");
  fputs("this is a text file, not HDF5\n", txt);
  fclose(txt);
  return 0;
}
