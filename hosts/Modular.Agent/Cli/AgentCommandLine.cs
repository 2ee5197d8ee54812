using System.CommandLine;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Agent.Daemon;
using Modular.Agent.Protocol;
using Modular.Agent.Status;
using Modular.Composition;
using Modular.Core.Config;

namespace Modular.Agent.Cli;

/// <summary>The `modular` command line: up, down, status, ui, plugins, config check.</summary>
internal static class AgentCommandLine
{
    public static async Task<int> RunAsync(string[] args)
    {
        var root = Build();
        var parseResult = root.Parse(args);
        if (parseResult.Errors.Count > 0 && parseResult.Action is not System.CommandLine.Help.HelpAction)
        {
            foreach (var error in parseResult.Errors)
            {
                await Console.Error.WriteLineAsync(error.Message);
            }

            await Console.Error.WriteLineAsync("Run `modular --help` (or `modular COMMAND --help`) for usage.");
            return ExitCodes.Usage;
        }

        // `up` stops on SIGTERM/SIGINT through the host's own lifetime; the other commands are short.
        var invocation = new InvocationConfiguration { ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false };
        try
        {
            return await parseResult.InvokeAsync(invocation);
        }
        catch (DaemonUnavailableException e)
        {
            await Console.Error.WriteLineAsync(e.Message);
            return ExitCodes.Error;
        }
        catch (ConfigException e)
        {
            await Console.Error.WriteLineAsync(e.Message);
            return ExitCodes.Error;
        }
        catch (Exception e) when (e is PluginLoadException or IOException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync(e.Message);
            return ExitCodes.Error;
        }
        catch (Grpc.Core.RpcException e)
        {
            await Console.Error.WriteLineAsync($"the modular daemon failed the request: {e.Status.StatusCode}: {e.Status.Detail}");
            return ExitCodes.Error;
        }
    }

    public static RootCommand Build()
    {
        var root = new RootCommand("modular: the Modular mesh-VPN agent (WireGuard peers found through a management server).");
        root.Subcommands.Add(UpCommand());
        root.Subcommands.Add(DownCommand());
        root.Subcommands.Add(StatusCommand());
        root.Subcommands.Add(UiCommand());
        root.Subcommands.Add(PluginsCommand());
        root.Subcommands.Add(ConfigCommand());
        root.Subcommands.Add(DebugCommand());
        return root;
    }

    private static Option<string?> SocketOption() => new("--socket")
    {
        Description = "The daemon's CLI socket (default: MODULAR_SOCKET, else the config's socket, else /var/run/modular/<interface>.sock).",
        HelpName = "PATH",
    };

    private static Option<string?> ConfigOption() => new("--config")
    {
        Description = "Agent config file (default: MODULAR_CONFIG, else /etc/modular/agent.toml).",
        HelpName = "FILE",
    };

    private static Command UpCommand()
    {
        var config = ConfigOption();
        var lazy = new Option<bool>("--enable-lazy-connection")
        {
            Description = "Connect to a peer only when traffic for it appears (overrides features.lazy_connections and the account).",
        };
        var lazyOnOff = new Option<string?>("--lazy-connections")
        {
            Description = "on or off: lazy connections for this run, whatever the environment, the UI, the file or the account say.",
            HelpName = "on|off",
        };
        lazyOnOff.AcceptOnlyFromAmong("on", "off");
        var socket = SocketOption();
        var logLevel = new Option<string?>("--log-level")
        {
            Description = "trace, debug, info, warn or error (overrides log.level).",
            HelpName = "LEVEL",
        };
        logLevel.AcceptOnlyFromAmong("trace", "debug", "info", "warn", "error");
        var hostname = new Option<string?>("--hostname")
        {
            Description = "The name this peer registers with, a DNS label (overrides MODULAR_HOSTNAME and hostname; default: the machine's name).",
            HelpName = "NAME",
        };

        var command = new Command("up", "Run the agent daemon in the foreground until SIGTERM, SIGINT or `modular down`.")
        {
            config, lazy, lazyOnOff, socket, logLevel, hostname,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(lazy) && result.GetValue(lazyOnOff) == "off")
            {
                result.AddError("--enable-lazy-connection and --lazy-connections off contradict each other; give one.");
            }
        });
        // RuntimeFeature.IsDynamicCodeSupported is a constant in the native build: the daemon (and its plugin loading) is trimmed out of it.
        command.SetAction((parse, cancellationToken) => !RuntimeFeature.IsDynamicCodeSupported
            ? Task.FromResult(ManagedAgent.Exec())
            : AgentDaemon.RunAsync(
                new UpOptions(
                    parse.GetValue(config),
                    parse.GetValue(lazyOnOff) is { } onOff ? onOff == "on" : parse.GetValue(lazy) ? true : null,
                    parse.GetValue(socket),
                    parse.GetValue(logLevel),
                    parse.GetValue(hostname)),
                cancellationToken));
        return command;
    }

    private static Command DownCommand()
    {
        var socket = SocketOption();
        var command = new Command("down", "Stop the running daemon and wait until it is gone.") { socket };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = DaemonClient.Connect(AgentPaths.ClientSocketPath(parse.GetValue(socket)));
            var reply = await client.InvokeAsync((d, o) => d.DownAsync(new DownRequest(), o), cancellationToken);

            // The daemon removes its socket late in its shutdown, then the process still has to exit:
            // "stopped" means both (a script may start a new daemon right after), bounded.
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (DaemonSocket.IsAnswering(client.SocketPath) || File.Exists(client.SocketPath) || !DaemonProcess.HasExited(reply.Pid))
            {
                if (DateTime.UtcNow > deadline)
                {
                    var what = File.Exists(client.SocketPath) ? $"still holds {client.SocketPath}" : "has not exited";
                    await Console.Error.WriteLineAsync($"modular daemon (pid {reply.Pid}) was asked to stop but {what} after 20 s");
                    return ExitCodes.Error;
                }

                await Task.Delay(50, cancellationToken);
            }

            Console.WriteLine($"modular daemon (pid {reply.Pid}) stopped");
            return ExitCodes.Ok;
        });
        return command;
    }

    // Hidden: for tests and troubleshooting. `restart-engine` does what a network change does.
    private static Command DebugCommand()
    {
        var socket = SocketOption();
        var cancelAt = new Option<string?>("--cancel-at")
        {
            Description = "Also cancel the next engines at these start-up steps, one each (needs the daemon started with MODULAR_TEST_HOOKS=1).",
            HelpName = "STEP[,STEP…]",
        };
        var restart = new Command("restart-engine", "Stop the engine fully and start a new one, as a network change does.") { socket, cancelAt };
        restart.SetAction(async (parse, cancellationToken) =>
        {
            using var client = DaemonClient.Connect(AgentPaths.ClientSocketPath(parse.GetValue(socket)));
            var reply = await client.InvokeAsync(
                (d, o) => d.RestartEngineAsync(new RestartEngineRequest { CancelAtStep = parse.GetValue(cancelAt) ?? "" }, o),
                cancellationToken);
            Console.WriteLine(reply.Restarted ? $"engine restart requested ({reply.EngineRestarts} restarts before it)" : "no engine running to restart");
            return reply.Restarted ? ExitCodes.Ok : ExitCodes.Error;
        });
        return new Command("debug", "Troubleshooting commands.") { Hidden = true, Subcommands = { restart } };
    }

    private static Command StatusCommand()
    {
        var detail = new Option<bool>("--detail", "-d") { Description = "Show every peer." };
        var json = new Option<bool>("--json") { Description = "Print the full status as one JSON object (fields: docs/status.md)." };
        var socket = SocketOption();
        var command = new Command("status", "Show the agent's status as the daemon last recorded it.") { detail, json, socket };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var asJson = parse.GetValue(json);
            using var client = DaemonClient.Connect(AgentPaths.ClientSocketPath(parse.GetValue(socket)));
            var reply = await client.InvokeAsync(
                (d, o) => d.StatusAsync(new StatusRequest { Detail = asJson || parse.GetValue(detail) }, o),
                cancellationToken);
            var status = StatusMapping.FromReply(reply);
            Console.Write(asJson
                ? StatusJson.Serialize(status) + Environment.NewLine
                : StatusText.Format(status, reply.PeersTotal, reply.PeersConnected, parse.GetValue(detail), TimeProvider.System.GetUtcNow(), reply.PeersIdle));
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command UiCommand()
    {
        var socket = SocketOption();
        var command = new Command(
            "ui",
            "Print a one-time link that signs a browser in to the local web UI (valid once, for 60 s). The UI answers nobody else: " +
            "whoever may use the CLI socket may use the UI.")
        {
            socket,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = DaemonClient.Connect(AgentPaths.ClientSocketPath(parse.GetValue(socket)));
            var reply = await client.InvokeAsync((d, o) => d.UiLoginAsync(new UiLoginRequest(), o), cancellationToken);
            Console.WriteLine(reply.Url);
            await Console.Error.WriteLineAsync($"Open this link in a browser on this machine; it works once, within {reply.ValidSeconds} s, and keeps that browser signed in.");
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command PluginsCommand()
    {
        var json = new Option<bool>("--json") { Description = "Print the plugins as JSON." };
        var config = ConfigOption();
        var pluginsDir = new Option<string?>("--plugins-dir")
        {
            Description = "Scan this folder instead of asking the daemon or reading the config's plugins_dir.",
            HelpName = "DIR",
        };
        var socket = SocketOption();
        var command = new Command("plugins", "List the plugins (from the running daemon if one answers, else by loading them here).")
        {
            json, config, pluginsDir, socket,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var listing = parse.GetValue(pluginsDir) is null
                ? await ListPluginsFromDaemonAsync(parse.GetValue(config), parse.GetValue(socket), cancellationToken)
                : null;
            if (listing is null)
            {
                if (!RuntimeFeature.IsDynamicCodeSupported)
                {
                    return ManagedAgent.Exec();
                }

                listing = LoadPluginsHere(parse.GetValue(pluginsDir), parse.GetValue(config));
            }

            var (reply, source) = listing.Value;
            Console.Write(parse.GetValue(json) ? PluginListing.ToJson(reply, source) + Environment.NewLine : PluginListing.ToText(reply, source));
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>The running daemon's plugins, or null when no daemon answers.</summary>
    private static async Task<(ListPluginsReply Reply, string Source)?> ListPluginsFromDaemonAsync(
        string? configFlag, string? socketFlag, CancellationToken cancellationToken)
    {
        var socketPath = AgentPaths.ClientSocketPath(socketFlag, configFlag);
        if (!DaemonSocket.IsAnswering(Path.GetFullPath(socketPath)))
        {
            return null;
        }

        try
        {
            using var client = DaemonClient.Connect(socketPath);
            return (await client.InvokeAsync((d, o) => d.ListPluginsAsync(new ListPluginsRequest(), o), cancellationToken), "from the running daemon");
        }
        catch (DaemonUnavailableException)
        {
            return null; // it went away between the probe and the call: load them here instead
        }
    }

    private static (ListPluginsReply Reply, string Source) LoadPluginsHere(string? pluginsDirFlag, string? configFlag)
    {
        string directory;
        if (pluginsDirFlag is not null)
        {
            directory = Path.GetFullPath(pluginsDirFlag);
        }
        else
        {
            var configPath = AgentPaths.ConfigPath(configFlag);
            directory = configFlag is null && !File.Exists(configPath)
                ? AgentPaths.PluginsDir(new AgentConfig { ManagementUrls = [] })
                : AgentPaths.PluginsDir(AgentConfigLoader.Load(configPath, AgentPaths.Environment(), new AgentConfigOverrides()));
        }

        using var catalog = PluginCatalog.Load(directory, NullLogger.Instance);
        return (PluginListing.ToReply(directory, catalog.Plugins), "loaded by this command; no daemon answered");
    }

    private static Command ConfigCommand()
    {
        var file = new Argument<string>("FILE") { Description = "The agent config file to check." };
        var check = new Command("check", "Load and validate a config file, including the plugin names it selects.") { file };
        check.SetAction(async (parse, cancellationToken) =>
        {
            if (!RuntimeFeature.IsDynamicCodeSupported)
            {
                return ManagedAgent.Exec();
            }

            var path = parse.GetValue(file)!;
            var config = AgentConfigLoader.Load(path, AgentPaths.Environment(), new AgentConfigOverrides());
            var pluginsDir = AgentPaths.PluginsDir(config);
            using (var catalog = PluginCatalog.Load(pluginsDir, NullLogger.Instance))
            {
                PluginSelection.Validate(config, catalog);
            }

            // Valid, but a key that does nothing yet is worth a line each; the exit code stays 0.
            foreach (var warning in NotBuiltYet.Warnings(config))
            {
                await Console.Error.WriteLineAsync($"warning: {warning}");
            }

            await Console.Out.WriteLineAsync($"{path}: OK");
            return ExitCodes.Ok;
        });

        return new Command("config", "Work with agent config files.") { check };
    }
}
