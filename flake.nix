{
  description = "murmur: agents, coordinators and voters cooperating over NATS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # `murmur` itself; generated deployment flakes take it from this input.
      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "murmur";
          version = "0.1.0";
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # Cargo.toml's `deploy` profile (fat LTO): a smaller binary and a smaller resident set
          # for every agent a deployment runs; nixpkgs passes it as `--profile deploy`.
          buildType = "deploy";
          cargoBuildFlags = [
            "--package"
            "murmur-tools"
            "--bin"
            "murmur"
          ];
          # The test suites need a nats-server and network access; CI runs them.
          doCheck = false;
          meta.mainProgram = "murmur";
        };
      });

      # The agent module: services.murmur-agents.<name> = { kind; capabilities; ... }.
      nixosModules.default = import ./nix/module/murmur-agent.nix;
      nixosModules.murmur-agent = self.nixosModules.default;

      formatter = forAll (pkgs: pkgs.nixfmt);
    };
}
