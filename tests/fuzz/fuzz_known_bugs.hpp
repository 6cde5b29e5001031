// Library bugs this fuzzer found, each with the check that shows it. By default the fuzzer steps
// around them (so the api-fuzz test passes while they are open); api_fuzz_run
// --check-known-bugs checks the documented behaviour instead, to confirm a fix before the
// workaround at each use of check_known_bugs() is removed.
//
// 1. (Fixed: sa_index_update with positions NULL now refuses next positions past
//    SA_MAX_POSITION with SA_ERR_OVERFLOW, as sa_index_append does; checked always.)
// 2. Stale largest position: when sa_index_update moves the slot holding the largest position
//    to a smaller one, the index keeps the old maximum (KeyStore::max_pos_ only grows), so
//    sa_select's default query positions and the positions of later appends are computed from a
//    position no slot holds (sa_index_truncate recomputes it).
// 3. Window and sink slots dropped: with positions repeated (sa_index_update), the slots that
//    must be kept can outnumber sinks + window; write_selection then sorts the forced and the
//    scored slots together and cuts the list at width, dropping the highest-numbered slots
//    (the current window) while keeping scored ones, though its comment says "Window and sinks
//    come first".
// 4. sa_attend_paged, dense, with every sequence of length 0: the empty list of tokens has a
//    NULL data() pointer, so the attention driver takes the call for dense attention over every
//    row of the cache (out and lse of all the pages, slot_mass too) instead of out = 0,
//    lse = -inf.
// 5. (Fixed: slot_mass over index lists of width 0 took &v[0] of an empty vector, undefined
//    behaviour UBSan aborted on; checked always.)
#pragma once

namespace apifuzz {

inline bool &check_known_bugs() {
  static bool on = false;
  return on;
}

}  // namespace apifuzz
