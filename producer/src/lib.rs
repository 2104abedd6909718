//! Producer (bucket → frame jobs), collector (results → bucket) and submit.

pub mod collect;
pub mod decode;
pub mod discover;
mod ledger;
mod orient;
mod prebatch;
pub mod produce;
mod rescale;
mod sampler;
mod scene;
pub mod submit;
mod timeline;
