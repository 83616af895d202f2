//! The kernel's interfaces the collectors read through, with no metrics of their own:
//! rtnetlink (the interface table), network namespaces, BTF, and the small system calls
//! and files (`bpf(2)`, capabilities, `uname`) several parts need.

pub mod btf;
pub mod links;
pub mod netns;
pub mod sys;
pub(crate) mod tasks;
