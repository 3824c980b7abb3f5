//! The HTTP side of profiledb (feature `server`): the People page in [`web`].
pub mod web;
