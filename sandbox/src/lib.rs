//! The sandbox runtime: everything needed to run the system that fails.
//!
//! Responsible for: the state dir layout ([`paths`]), the private PostgreSQL cluster
//! ([`postgres`]), the target's `.env` ([`envfile`]), the service topology ([`topology`]),
//! the [`runtime::Runtime`] abstraction and its implementations: local processes
//! ([`supervisor`]) and Docker containers ([`docker`]), probed alike ([`health`]),
//! the control API that other processes use to drive a running sandbox ([`control`]),
//! and the event timeline ([`events`]).
//!
//! Not responsible for: what the services do (that is `target-app`), injecting faults
//! (`aiops-chaos`), deciding what to fix (`aiops-remediation`, the agent) or speaking MCP
//! (`mcp-server`).

pub mod config;
pub mod control;
pub mod docker;
pub mod envfile;
pub mod error;
pub mod events;
pub mod health;
pub mod incidents;
pub mod paths;
pub mod postgres;
pub mod prepare;
pub mod procinfo;
pub mod runtime;
pub mod secrets;
pub mod supervisor;
pub mod topology;

pub use error::{Error, Result};
pub use paths::StateDir;
pub use runtime::{Runtime, ServiceState, ServiceStatus};
