//! The service over real HTTP, with a real database and broker. One test binary: the modules
//! share `helpers` and are linked once.

mod exports;
mod exports_helpers;
mod fuzz;
mod health;
mod helpers;
mod nightly;
mod orders_view;
mod retention;
mod shutdown;
