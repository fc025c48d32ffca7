//! One module per step kind: what it asks for, how it runs inside `memo`, what it stores.

pub(crate) mod approval;
pub(crate) mod checkpoint;
pub(crate) mod code;
pub(crate) mod llm;
pub(crate) mod tool;
