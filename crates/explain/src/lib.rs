//! Decision explainability for Aragora debates (issue 5, DESIGN.md §7).
//!
//! Pure: no I/O. [`explain`] recounts a debate's votes with the core consensus rule and computes
//! everything in an [`Explanation`]: vote pivots with a Banzhaf pivotality index, counterfactuals
//! (each one a recount of modified votes), the minimal flip set, evidence relevance and ablation,
//! belief changes, a reasoning chain and an additive confidence attribution. Renderers turn an
//! explanation into a summary, Markdown, Mermaid or a standalone HTML page with an inline SVG.
//! Formulas: docs/explainability.md.

mod engine;
pub mod game;
mod json;
pub mod power;
pub mod render;
pub mod synth;
mod types;
pub mod util;

pub use engine::{ALGORITHM_VERSION, CONFIDENCE_SHIFT, QUOTE_CHARS, explain};
pub use json::{to_json, write_json};
pub use render::{render_html, render_markdown, render_mermaid, render_summary, render_svg};
pub use types::*;
