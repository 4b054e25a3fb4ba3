//! The service over real HTTP, with a real database and broker. One test binary: the modules
//! share `helpers` and are linked once.

mod health;
mod helpers;
mod orders_view;
