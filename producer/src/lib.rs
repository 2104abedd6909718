//! Producer (bucket → frame jobs), collector (results → bucket) and submit.

pub mod collect;
pub mod decode;
pub mod discover;
mod orient;
mod prebatch;
pub mod produce;
mod sampler;
pub mod submit;
mod timeline;
