"""invoke tasks: a thin namespace over toolbox.cli, where each task reads its flags, calls the package and prints.

`invoke --list` shows the tasks; `invoke --help <task>` explains every flag.
"""

from invoke import Collection

from toolbox.cli import bench, host, images, report, results, rpc, serve, site, tune

ns = Collection()
for module in (images, bench, serve, tune, results, report, site, host, rpc):
    for t in Collection.from_module(module).tasks.values():
        ns.add_task(t)
