//! Remediation: safe actions an agent may take to fix the sandbox.
//!
//! Responsible for (once the remediation issue lands): every action's
//! `plan (dry-run) → policy → audit → execute → verify` shape, approvals, rate limits and
//! the append-only audit log.
//!
//! Not responsible for: speaking MCP (that is `mcp-server`), nor injecting faults (that is
//! `aiops-chaos`). This crate is empty until the remediation issue fills it.
