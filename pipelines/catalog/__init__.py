"""The auditors' DuckDB catalog: building it from record tables, querying it read-only, and an
HTML report.

- :mod:`.build`: ``build_catalog(outputs, catalog)``, one table per record table plus metadata;
- :mod:`.views`: the SQL of the audit views (hours by split, turn-taking, leakage, licenses, ...);
- :mod:`.audit`: ``run_query(catalog, sql)`` for one read statement, and result printing;
- :mod:`.report`: ``write_report(catalog, output)``, one self-contained index.html (verdict, tables,
  inline plots, the SQL of each section; :mod:`.report_verdict`, :mod:`.report_sections`);
- :mod:`.build_info`: when and from which code a catalog was built;
- :mod:`.run`: the ``microturn catalog`` and ``microturn audit`` entry points.
"""
