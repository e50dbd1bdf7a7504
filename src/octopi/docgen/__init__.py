"""Generate the reference parts of the user docs from the code.

``python -m octopi.docgen`` rewrites:

- ``docs/config-reference.md`` (whole file): every config model of :mod:`octopi.config` and
  its fields (type, default, constraints, description), in the order of
  :class:`~octopi.config.WorkflowConfig`, then the models of single commands;
- ``docs/search-space.md``: the block between the ``generated`` markers, from
  :func:`octopi.models.search_spaces.search_space_table`;
- ``docs/flags.md``: the block between the ``generated`` markers, one table of options per
  ``octopi`` subcommand (read from the click commands).

``python -m octopi.docgen --check`` writes nothing and exits 1 when a page is stale.
Only click and the config models are imported at module level; the CLI modules and the
search spaces are imported when their pages are made.

Modules: :mod:`~octopi.docgen.pages` (the pages, stale or rewritten),
:mod:`~octopi.docgen.config_reference` (with the prose of
:mod:`~octopi.docgen.config_descriptions`), :mod:`~octopi.docgen.flags` (the option tables),
:mod:`~octopi.docgen.markdown` (table cells, generated blocks); ``__main__`` is the command.
"""

COMMAND = "python -m octopi.docgen"
