//! Raw → validated: every rule, every error collected. STUB.
use std::path::Path;

use super::{Config, ConfigErrors, Warning};

pub fn validate(_path: &Path, _text: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    todo!("config helper")
}
