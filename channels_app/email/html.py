"""A reply's HTML part (beside the plain text, which stays the message itself).

The text is read as markdown (the bot writes **bold**, lists and links; agents may too) and
rendered with Python-Markdown. Nothing the model or an agent writes becomes markup of its
own: HTML in the text is escaped before rendering; links keep only http(s) and mailto
targets (others become plain text); images become their alt text, so a reply can never
carry a tracking pixel or a script.
"""
import html

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

SAFE_LINKS = ("http://", "https://", "mailto:")
STYLE = "font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#1f2330"


class _Sanitize(Treeprocessor):
    def run(self, root):
        for node in root.iter():
            if node.tag == "img":
                node.tag, node.text = "span", node.get("alt", "")
                node.attrib.clear()
            elif node.tag == "a" and not node.get("href", "").strip().lower().startswith(SAFE_LINKS):
                node.tag = "span"
                node.attrib.clear()


class _SanitizeExtension(Extension):
    def extendMarkdown(self, md):
        md.treeprocessors.register(_Sanitize(md), "chatnexus-sanitize", 5)  # after links and images exist (20)


def to_html(text: str) -> str:
    body = markdown.markdown(html.escape(text, quote=False), extensions=["sane_lists", "nl2br", _SanitizeExtension()])
    return f'<!doctype html>\n<html><body><div style="{STYLE}">{body}</div></body></html>\n'
