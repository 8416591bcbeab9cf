"""Small network helpers shared by the features: DNS resolvers, peer identity, unix sockets."""
