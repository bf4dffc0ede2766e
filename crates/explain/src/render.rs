pub fn render_summary(_: &crate::Explanation) -> String {
    String::new()
}
pub fn render_markdown(_: &crate::Explanation) -> String {
    String::new()
}
pub fn render_mermaid(_: &aragora_core::debate::Debate, _: &crate::Explanation) -> String {
    String::new()
}
pub fn render_html(_: &aragora_core::debate::Debate, _: &crate::Explanation) -> String {
    String::new()
}
