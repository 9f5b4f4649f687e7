"""What a user runs rather than imports: the ``lca`` command line, the demo, the cost
estimate, the cross-framework conformance problems and the HTML report."""
