//! The lab's layers, one file each: the formula in the file's header, the forward and
//! backward passes side by side, the tests at the bottom.

mod conv;
mod cross_entropy;
mod flatten;
mod full;
mod max_pool;
mod relu;
mod softmax;

pub use conv::ConvLayer;
pub use cross_entropy::CrossEntropyLayer;
pub use flatten::FlattenLayer;
pub use full::FullLayer;
pub use max_pool::MaxPoolLayer;
pub use relu::ReluLayer;
pub use softmax::SoftMaxLayer;
