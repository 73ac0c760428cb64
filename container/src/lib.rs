//! # molde-container
//!
//! Containers: the process launcher ([`launch`]) and the container lifecycle. Depends on
//! `molde-image` and `molde-layerfs`.
//!
//! - [`Container::builder`] ([`ContainerBuilder`]) makes a container from an image, configured
//!   like `std::process::Command` plus the container's own settings (mounts, volumes, network,
//!   limits, timeout).
//! - A [`Container`] goes created -> running -> exited -> (restarted) -> removed; its record
//!   persists in the store, so another process can [`Container::list`] and
//!   [`Container::open`] it.
//! - [`ContainerBuilder::tty`] gives the process a terminal; [`attach::attach`] joins it to
//!   this program's own (`docker run -it`).
//! - [`Container::diff`], [`Container::commit`], [`Container::copy_in`],
//!   [`Container::copy_out`] and [`Container::view`] work on its writable layer.

#![deny(missing_docs)]

pub mod attach;
pub mod build;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod error;
pub mod landlock;
pub mod launch;
pub mod logs;
pub mod network;
pub mod record;
pub mod rlimit;
pub mod seccomp;
pub mod volume;

pub use build::{Build, BuildError, BuildReport};
pub use container::list::recover;
pub use container::{Child, Container, ContainerSummary, ExecBuilder, ExecChild, Output, Status};
pub use container::{ContainerBuilder, Stdio};
pub use error::ContainerError;
pub use landlock::Landlock;
pub use launch::{ExitStatus, Network, Terminal, WindowSize};
pub use logs::{LogConfig, LogFollower, LogLine, Stream};
pub use molde_image as image;
pub use seccomp::{Seccomp, SeccompError};
pub use volume::{Volume, VolumeError};
