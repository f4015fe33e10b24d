//! The entitle agent: what runs on a user's device.
//!
//! `machine` decides (sans-IO: it never reads a clock, a socket or a disk; time
//! and randomness are parameters), `lkg` keeps the last-known-good policy on
//! disk, `driver` connects the machine to the server and to the local control
//! socket, and `fleet` runs thousands of machines in one process.

pub mod driver;
pub mod fleet;
pub mod lkg;
pub mod machine;
