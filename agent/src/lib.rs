//! The scripted agent and the drill harness.
//!
//! Responsible for (once the agent issue lands): an MCP client that runs the whole
//! observe → diagnose → act → verify → report loop with no LLM, and the drill that scores
//! any agent against hidden ground truth.
//!
//! Not responsible for: any backdoor into the sandbox; it sees only the MCP surface. This
//! crate is empty until the agent issue fills it.
