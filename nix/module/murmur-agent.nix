# NixOS module: murmur agents as systemd services.
#
#   services.murmur-agents.planner = {
#     kind = "planner";
#     natsUrls = [ "nats://10.0.0.1:4222" ];
#     credentialsFile = "/etc/murmur/planner.creds";
#     package = murmur.packages.x86_64-linux.default;
#   };
#
# Each agent runs `murmur agent run KIND --name NAME --slots N [--capability C]...` as
# `murmur-agent-NAME.service` with a dynamic user and its own state directory. Its
# credentials (`murmur creds issue`) stay a file on the host, outside the Nix store: systemd
# hands the service a private copy (LoadCredential), which it connects and signs with.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.murmur-agents;
  agentOptions = { name, ... }: {
    options = {
      kind = lib.mkOption {
        type = lib.types.str;
        description = "Agent kind (planner, compiler, executor, tool, memory, inference, ...).";
      };
      capabilities = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Capabilities the agent offers; empty takes the kind's default.";
      };
      natsUrls = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ "nats://127.0.0.1:4222" ];
        description = "NATS servers; the agent fails over between them.";
      };
      realm = lib.mkOption {
        type = lib.types.str;
        default = "default";
        description = "murmur realm (tenant).";
      };
      credentialsFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "NATS credentials file (JWT + seed) on the host, readable by root; never a store path. The agent's identity is the key they were issued to.";
      };
      environment = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        description = "Extra environment variables.";
      };
      package = lib.mkOption {
        type = lib.types.package;
        description = "The murmur package.";
      };
      after = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Units to start after.";
      };
      requires = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Units required.";
      };
      memoryMax = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "systemd MemoryMax, e.g. \"512M\".";
      };
      cpuQuota = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "systemd CPUQuota, e.g. \"50%\".";
      };
      slots = lib.mkOption {
        type = lib.types.ints.positive;
        default = 1;
        description = "Tasks the agent runs at once (`--slots`); coordinators assign it at most this many.";
      };
    };
  };
in
{
  options.services.murmur-agents = lib.mkOption {
    type = lib.types.attrsOf (lib.types.submodule agentOptions);
    default = { };
    description = "murmur agents, each run as a systemd service.";
  };

  config.systemd.services = lib.mapAttrs' (
    name: agent:
    lib.nameValuePair "murmur-agent-${name}" {
      description = "murmur ${agent.kind} agent ${name}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ agent.after;
      requires = agent.requires;
      environment = agent.environment // {
        NATS_URL = lib.concatStringsSep "," agent.natsUrls;
        MURMUR_REALM = agent.realm;
        MURMUR_DATA_DIR = "/var/lib/murmur-agent-${name}";
      };
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (
          [ "${agent.package}/bin/murmur" ]
          # %d: the service's credentials directory, where LoadCredential puts its copy.
          ++ lib.optionals (agent.credentialsFile != null) [ "--creds" "%d/murmur.creds" ]
          ++ [ "agent" "run" agent.kind "--name" name ]
          ++ [ "--slots" (toString agent.slots) ]
          ++ lib.concatMap (c: [ "--capability" c ]) agent.capabilities
        );
        LoadCredential = lib.optional (agent.credentialsFile != null) "murmur.creds:${agent.credentialsFile}";
        DynamicUser = true;
        Restart = "on-failure";
        StateDirectory = "murmur-agent-${name}";
        KillSignal = "SIGTERM";
      } // lib.optionalAttrs (agent.memoryMax != null) {
        MemoryMax = agent.memoryMax;
      } // lib.optionalAttrs (agent.cpuQuota != null) {
        CPUQuota = agent.cpuQuota;
      };
    }
  ) cfg;
}
