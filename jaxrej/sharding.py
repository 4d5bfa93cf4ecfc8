"""Moved: sharding is the `mesh=` option of the one class scorer."""

raise ImportError(
    "jaxrej.sharding was replaced by the mesh= option: "
    "jaxrej.class_log_likelihoods(..., mesh=jaxrej.batch_mesh()) (screens work there too)"
)
