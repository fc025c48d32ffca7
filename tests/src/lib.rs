//! Wflo's end-to-end suite lives in `tests/` (feature `integration`); this library is empty.
