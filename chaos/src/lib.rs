//! Chaos: real, reversible faults injected into the sandbox.
//!
//! Responsible for (once the chaos issue lands): the fault catalogue, each fault's
//! `inject → verify_effect → revert → status` shape, leases (TTL) and the write-ahead
//! ledger that the reaper replays at every start of `aiops`.
//!
//! Not responsible for: starting or supervising services (that is `aiops-sandbox`), nor
//! fixing what a fault broke (that is `aiops-remediation`). This crate is empty until the
//! chaos issue fills it; it exists so the workspace layout in ARCHITECTURE.md is real.
