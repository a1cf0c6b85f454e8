// LeakSanitizer suppressions for binaries that embed CPython (linked into
// tests and fuzz targets only). CPython allocates its runtime once and never
// frees it without Py_FinalizeEx, which the tests do not call; those blocks
// are allocated inside libpython. Reference leaks of our own objects are not
// hidden by this: they live in pymalloc arenas, which LSan cannot see anyway
// (the refcount checks in python_value_test are what catch them).
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libpython3.11.so\n";
}
