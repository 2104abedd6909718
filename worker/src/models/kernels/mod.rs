//! CPU kernels the model families share, where candle's ops are the limit:
//! each falls back to candle's ops on other devices.

pub mod attention;
pub mod depthwise;
pub mod exp;
pub mod gemm;
pub mod im2col;
pub mod linear;
pub mod mbconv;
pub mod pool;
pub mod softmax;
