//! Template marketplace domain logic: what a valid template graph is, how versions compare, how
//! checksums are computed, who may see what, how search ranks and how ratings aggregate. Pure:
//! no I/O; the store and the HTTP routes build on it.

pub mod list;
pub mod rating;
pub mod request;
pub mod search;
pub mod semver;
pub mod template;
pub mod visibility;

pub use list::{KeyVal, ListRequest, Mode, RawList, Sort};
pub use search::{Query, SearchFields};
pub use semver::Version;
pub use template::{Canonical, Limits};
pub use visibility::{Viewer, Visibility};
