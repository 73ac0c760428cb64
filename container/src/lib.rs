//! # molde-container
//!
//! Containers: the process launcher and the container lifecycle. Depends on `molde-image` and
//! `molde-layerfs`. Its contents arrive with the issue "molde-container: the process launcher and
//! the container lifecycle": this crate is empty until then.

pub use molde_image as image;

pub mod cgroup;
pub mod rlimit;
