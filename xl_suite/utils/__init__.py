"""Small utilities with public names: optional imports (:mod:`~xl_suite.utils.imports`), the library's logging
verbosity (:mod:`~xl_suite.utils.logging`) and the one offline-mode check (:mod:`~xl_suite.utils.hub`)."""
