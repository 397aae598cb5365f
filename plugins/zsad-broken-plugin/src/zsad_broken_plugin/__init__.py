"""A deliberately broken zsad plugin (see the package README); importing this package itself is fine."""
