//! Child processes: spawning them pinned to their cores, their ports,
//! sampling their resources, profiling them.

pub mod child;
pub mod pin;
pub mod ports;
pub mod procmon;
pub mod profile;
pub mod servers;

pub use child::Child;
