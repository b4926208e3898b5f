/*
 * bcryptprimitives.dll for Wine releases that lack it (Debian 12's Wine 8.0),
 * with the one function Rust's std imports from it: ProcessPrng, which std
 * calls for the random keys of every HashMap (rust-lang/rust#121337, Rust
 * 1.78; the failure under Debian's Wine 8.0 is rust-lang/rust#128066). Built
 * with zig's mingw and put beside the test executables by
 * scripts/test-platforms.sh, never shipped. Windows documents ProcessPrng as
 * filling the buffer and always returning TRUE; this fills it from
 * RtlGenRandom (advapi32's SystemFunction036), which Wine implements.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
    if (!SystemFunction036(data, n)) return FALSE;
    data += n;
    length -= n;
  }
  return TRUE;
}
