//! One worker process per device: consumes a task's frame jobs, runs the
//! model on dynamically assembled batches, publishes one result per job and
//! acks the job only after that result is confirmed.

mod batcher;
pub mod caption;
pub mod cli;
pub mod device;
pub mod embed;
mod engine;
pub mod heads;
pub mod heap;
mod intake;
pub mod load;
pub mod models;
mod pace;
mod reply;
pub mod run;
