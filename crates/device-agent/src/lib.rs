//! The entitle agent: what runs on a user's device.
//!
//! `machine` decides (sans-IO: it never reads a clock, a socket or a disk; time
//! and randomness are parameters), `protocol` makes the two calls to the
//! server, `runtime` is one agent's loop (sync, long-poll, polling, backoff),
//! `lkg` keeps the last-known-good policy on disk, `facts` reads what the
//! device is (host name, OS, disk encryption, posture commands), `driver` is the real agent
//! (state directory, control socket, JSON lines) and `fleet` runs thousands of
//! simulated agents in one process, both over the same runtime. `transport`
//! builds the HTTPS client every entitle command uses.

pub mod driver;
pub mod facts;
pub mod fleet;
pub mod hooks;
pub mod lkg;
pub mod machine;
pub mod protocol;
pub mod runtime;
pub mod transport;
