//! # molde-container
//!
//! Containers: the process launcher ([`launch`]) and the container lifecycle. Depends on
//! `molde-image` and `molde-layerfs`.

pub mod cgroup;
pub mod launch;
pub mod rlimit;

pub use molde_image as image;
