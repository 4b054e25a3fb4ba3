//! The service over real HTTP, with a real database and broker, and a fake provider behind the
//! webhook. One test binary: the modules share `helpers` and are linked once.

mod admin;
mod dead_letters;
mod delivery;
mod digest;
mod fuzz;
mod health;
mod helpers;
mod notifications;
mod retention;
mod shutdown;
mod slow_provider;
