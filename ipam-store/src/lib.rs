//! placeholder
pub mod mac;
pub use mac::Mac;
