"""Price providers: each turns a source (a file, a simulation, a vendor) into a stream of quotes."""
