"""The platform's own images (MLflow server, MLServer, workload images), built and pushed by the program.

Built with pulumi-docker-build (BuildKit embedded in the provider; no `docker build` step before
`pulumi up`), pushed to a registry the cluster pulls from, and referenced by digest, so a pod runs
exactly the build the stack made. Tags are content-derived (a hash of the files Docker sends, the
Dockerfile, the target and the platforms): registries with immutable tags accept every rebuild, and an
unchanged context keeps its tag. Knows nothing about which platform the registry belongs to.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build

HASH_LENGTH = 12  # hex digits of the content hash in a tag


@dataclass(frozen=True)
class ImageBuild:
    """How one image is built from a directory of this repository."""

    context: Path  # build context directory
    dockerfile: Path | None = None  # default: <context>/Dockerfile
    target: str | None = None  # multi-stage target
    version: str = ""  # human-readable start of the tag, e.g. "3.17.2-1"

    @property
    def dockerfile_path(self) -> Path:
        return self.dockerfile or self.context / "Dockerfile"


@dataclass(frozen=True)
class RegistryAuth:
    username: pulumi.Input[str]
    password: pulumi.Input[str]  # a secret


@dataclass(frozen=True)
class PlatformImagesArgs:
    registry: pulumi.Input[str]  # "<host>[:port][/<path>]": images are <registry>/<name>
    builds: Mapping[str, ImageBuild]  # image name → how to build it
    platforms: Sequence[str] = ("linux/amd64",)  # every node architecture the images run on
    auth: RegistryAuth | None = None  # None: the builder's own credentials (or an open registry)
    # image name → what must exist before its push (a registry that creates no repository on push)
    push_after: Mapping[str, pulumi.Resource] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way charts want it: `repository` and `version` (tag[@digest])."""

    repository: pulumi.Input[str]
    version: pulumi.Input[str]

    @property
    def ref(self) -> pulumi.Output[str]:
        return pulumi.Output.concat(self.repository, ":", self.version)


def _ignore_file(build: ImageBuild) -> Path | None:
    """The ignore file Docker uses: `<Dockerfile>.dockerignore` first, then `<context>/.dockerignore`."""
    for candidate in (Path(f"{build.dockerfile_path}.dockerignore"), build.context / ".dockerignore"):
        if candidate.is_file():
            return candidate
    return None


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out)


@dataclass(frozen=True)
class _Rules:
    """.dockerignore rules: the last pattern matching a path or one of its parents decides."""

    rules: tuple[tuple[re.Pattern[str], bool, str], ...]  # pattern, exception?, the pattern's text

    @classmethod
    def read(cls, path: Path | None) -> _Rules:
        rules = []
        for line in (path.read_text().splitlines() if path else []):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            text = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((_glob(text), exception, text))
        return cls(tuple(rules))

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for pattern, exception, _ in self.rules:
            if any(pattern.fullmatch(p) for p in prefixes):
                verdict = not exception
        return verdict

    def may_include_below(self, rel_dir: str) -> bool:
        """Whether an exception could re-include something under an excluded directory."""
        for _, exception, text in self.rules:
            literal = re.split(r"[*?\[]", text, maxsplit=1)[0]
            if exception and (literal.startswith(rel_dir + "/") or rel_dir.startswith(literal.rstrip("/"))):
                return True
        return False


def context_files(build: ImageBuild) -> list[str]:
    """The files Docker sends as the build context (ignore rules applied), relative and sorted."""
    rules = _Rules.read(_ignore_file(build))

    def walk(directory: Path, rel: str) -> Iterator[str]:
        for entry in sorted(directory.iterdir()):
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir() and not entry.is_symlink():
                if not rules.excluded(entry_rel) or rules.may_include_below(entry_rel):
                    yield from walk(entry, entry_rel)
            elif not rules.excluded(entry_rel):
                yield entry_rel

    return list(walk(build.context, ""))


def content_hash(build: ImageBuild, platforms: Sequence[str]) -> str:
    """sha256 of what decides the image: context files (names and bytes), Dockerfile, target, platforms."""
    digest = hashlib.sha256()
    for rel in context_files(build):
        digest.update(rel.encode() + b"\0" + hashlib.sha256((build.context / rel).read_bytes()).digest())
    digest.update(b"\0dockerfile\0" + build.dockerfile_path.read_bytes())
    digest.update(f"\0target\0{build.target or ''}\0platforms\0{','.join(sorted(platforms))}".encode())
    return digest.hexdigest()


def content_tag(build: ImageBuild, platforms: Sequence[str]) -> str:
    """`<version>-<hash>`: readable, and new whenever the build's inputs change."""
    short = content_hash(build, platforms)[:HASH_LENGTH]
    return f"{build.version}-{short}" if build.version else short


def registry_host(registry: str) -> str:
    return registry.split("/", 1)[0]


def _relative(path: Path) -> str:
    """Paths as the provider resolves them (from the program's working directory), machine-independent."""
    return os.path.relpath(path.resolve(), Path.cwd())


class PlatformImages(pulumi.ComponentResource):
    """Builds every image in `builds` for `platforms`, pushes it to `registry`; `images[name]` is the
    pushed reference with its digest."""

    def __init__(self, name: str, args: PlatformImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:images:PlatformImages", name, None, opts)
        registries = None
        if args.auth is not None:
            registries = [docker_build.RegistryArgs(
                address=pulumi.Output.from_input(args.registry).apply(registry_host),
                username=args.auth.username,
                password=pulumi.Output.secret(args.auth.password),
            )]
        self.images: dict[str, ImageRef] = {}
        for image, build in args.builds.items():
            repository = pulumi.Output.concat(args.registry, "/", image)
            tag = content_tag(build, args.platforms)
            built = docker_build.Image(
                f"{name}-{image}",
                context=docker_build.BuildContextArgs(location=_relative(build.context)),
                dockerfile=docker_build.DockerfileArgs(location=_relative(build.dockerfile_path)),
                target=build.target,
                platforms=list(args.platforms),
                tags=[pulumi.Output.concat(repository, ":", tag)],
                push=True,
                registries=registries,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[args.push_after[image]]
                                            if image in args.push_after else []),
            )
            self.images[image] = ImageRef(repository, pulumi.Output.concat(tag, "@", built.digest))
        self.register_outputs({name: ref.ref for name, ref in self.images.items()})

    def ref(self, image: str) -> pulumi.Output[str]:
        """`<registry>/<image>:<tag>@sha256:…` of the pushed build."""
        return self.images[image].ref
