"""Sphinx extension of the book.

* draws the code-drawn figures before the pages are read;
* serves MathJax from the built book itself (``_static/mathjax/``), copied from the pinned
  ``django-static-mathjax`` package, so no page depends on a CDN;
* makes the repository URL one setting: ``repository.url`` in ``_config.yml``, or the
  environment variable ``HPCAI_REPOSITORY_URL`` (which wins). With a URL the pages get the
  repository, issues and edit buttons and the Binder/Colab launch buttons; without one
  (the default) they get none of them, so no page links to a repository that is not there;
* keeps every page clean in a browser (``tests/test_browser.py``): no widget JavaScript from a
  CDN (the book's widgets only work in a live notebook), no inline script added twice (the
  thebe and togglebutton set-up scripts are otherwise declared twice, a JavaScript error),
  and a valid default colour mode (light).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The parts of MathJax's es5 bundle that the TeX-to-CommonHTML component loads.
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y",
                 "adaptors")


def _draw_figures(app: Any) -> None:
    sys.path.insert(0, str(ROOT))
    from figures.build import draw_all

    paths = draw_all(ROOT / "figures" / "generated")
    print(f"hpcai_book: drew {len(paths)} figures into figures/generated/")


REPOSITORY_ENV = "HPCAI_REPOSITORY_URL"
# Theme options that are links into the repository; all on with a URL, all off without one.
REPOSITORY_BUTTONS = ("use_repository_button", "use_issues_button", "use_edit_page_button",
                      "use_source_button")
# Launch providers: each builds its link from the repository URL.
LAUNCH_PROVIDERS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url",
                    "jupyterlite_url")


def repository_url(theme_options: dict[str, Any]) -> str:
    """The book's repository URL: ``$HPCAI_REPOSITORY_URL``, else ``repository.url``; or ''."""
    url = os.environ.get(REPOSITORY_ENV)
    if url is None:
        url = theme_options.get("repository_url") or ""
    return url.strip().rstrip("/")


def apply_repository_setting(theme_options: dict[str, Any]) -> dict[str, Any]:
    """Switch every repository-dependent button on (a URL is set) or off (none is)."""
    url = repository_url(theme_options)
    launch = dict(theme_options.get("launch_buttons") or {})
    if url:
        theme_options["repository_url"] = url
        for button in REPOSITORY_BUTTONS:
            theme_options[button] = True
    else:
        theme_options.pop("repository_url", None)
        for button in REPOSITORY_BUTTONS:
            theme_options[button] = False
        for provider in LAUNCH_PROVIDERS:
            launch.pop(provider, None)
        launch["thebe"] = False
    theme_options["launch_buttons"] = launch
    return theme_options


def _use_repository_setting(app: Any, config: Any) -> None:
    config.html_theme_options = apply_repository_setting(dict(config.html_theme_options))
    # pydata-sphinx-theme logs a console error on a first visit when its page context has
    # no default colour mode (a context value, not a theme option). Light, because the
    # figures are drawn on white; the reader's switch still changes it.
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "light")
    config.html_context = context


def _offline_widgets(app: Any, config: Any) -> None:
    # myst-nb loads RequireJS and the widget manager from CDNs on any page that saved widget
    # state; the book is read offline and its widgets need a kernel anyway.
    config.nb_ipywidgets_js = {}


def _asset_key(asset: Any) -> tuple[str, str]:
    # An inline script added after the builder started is registered twice, once with the
    # filename None and once with ''.
    attributes = getattr(asset, "attributes", {}) or {}
    filename = getattr(asset, "filename", asset) or ""
    return (str(filename), repr(sorted(attributes.items())))


def _dedupe_assets(app: Any, pagename: str, templatename: str, context: dict[str, Any],
                    doctree: Any) -> None:
    """Drop scripts (inline ones included) and style sheets added more than once."""
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if not assets:
            continue
        seen: set[tuple[str, str]] = set()
        unique = []
        for asset in assets:
            ident = _asset_key(asset)
            if ident not in seen:
                seen.add(ident)
                unique.append(asset)
        context[key] = unique


def _mathjax_source() -> Path:
    import mathjax  # django-static-mathjax

    return Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"


def _use_local_mathjax(app: Any, config: Any) -> None:
    config.mathjax_path = "mathjax/tex-mml-chtml.js"


def _copy_mathjax(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = _mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def setup(app: Any) -> dict[str, Any]:
    # Code fits or scrolls visibly (_static/page.css; checked by tests/test_browser.py).
    app.add_css_file("page.css")
    app.connect("config-inited", _use_local_mathjax)
    app.connect("config-inited", _use_repository_setting)
    app.connect("config-inited", _offline_widgets)
    app.connect("html-page-context", _dedupe_assets, priority=900)
    app.connect("builder-inited", _draw_figures)
    app.connect("build-finished", _copy_mathjax)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
