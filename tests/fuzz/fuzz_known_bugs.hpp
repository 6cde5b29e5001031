// Library bugs this fuzzer found, each with the check that shows it. By default the fuzzer steps
// around them (so the api-fuzz test passes while they are open); api_fuzz_run
// --check-known-bugs checks the documented behaviour instead, to confirm a fix before the
// workaround at each use of check_known_bugs() is removed.
//
// 1. Update positions past SA_MAX_POSITION: sa_index_update with positions NULL gives the slots
//    max_pos + 1, ... without checking the bound; after a slot holds SA_MAX_POSITION it accepts
//    positions beyond it (sa_index_append refuses the same with SA_ERR_OVERFLOW).
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
// 5. sa_attend / sa_attend_paged with slot_mass and index lists of width 0 (n_q > 0): SlotMass::
//    sparse takes &entry_mass_[k * width] of an empty vector, undefined behaviour that UBSan
//    reports ("reference binding to null pointer", src/attend/slot_mass.cpp:103) and aborts on
//    under meson test.
#pragma once

namespace apifuzz {

inline bool &check_known_bugs() {
  static bool on = false;
  return on;
}

}  // namespace apifuzz
