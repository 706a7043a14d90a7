"""Coverage-guided fuzzing of the wire decoders, the ring reader and the roles
(``scripts/fuzz``); ``test_fuzz_smoke`` runs a short pass of it in the suite."""
