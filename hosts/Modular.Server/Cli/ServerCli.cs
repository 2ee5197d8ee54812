using System.CommandLine;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Modular.Abstractions.Config;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Store;
using Serilog;
using Serilog.Events;

namespace Modular.Server.Cli;

/// <summary>
/// `modular-server`: runs the control plane, and administers the same store (setup keys, peers) — also
/// while the server runs: SQLite WAL lets both write, and the server picks changes up within a second.
/// </summary>
public static class ServerCli
{
    public const string DefaultConfigPath = "/etc/modular/server.toml";

    /// <summary>The command ran and failed: bad config, no store, a refusal, ports taken.</summary>
    public const int ErrorExit = 1;

    /// <summary>The command line itself was wrong: unknown command or option, missing argument, a malformed value.</summary>
    public const int UsageExit = 2;

    /// <summary>
    /// Every --json output. Relaxed escaping: base64 keys keep their '+' (not "\u002B"), so a grep for a
    /// public key finds it; the output is never embedded in HTML.
    /// </summary>
    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Parses and runs; a command line it cannot use is exit 2 with one line per problem.</summary>
    public static async Task<int> RunAsync(string[] args, CliDefaults? defaults = null)
    {
        var parse = Build(defaults).Parse(args);
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            foreach (var error in parse.Errors)
            {
                await Console.Error.WriteLineAsync($"modular-server: {UsageErrors.Describe(error)}");
            }

            await Console.Error.WriteLineAsync("Run `modular-server --help` (or `modular-server COMMAND --help`) for usage.");
            return UsageExit;
        }

        return await parse.InvokeAsync();
    }

    public static RootCommand Build(CliDefaults? defaults = null)
    {
        defaults ??= CliDefaults.System;
        var config = new Option<string>("--config", "-c")
        {
            Description = "server.toml (default: $MODULAR_CONFIG, else /etc/modular/server.toml); admin commands need the running server's",
            Recursive = true,
        };
        var root = new RootCommand(
            "Modular control plane. Without a command, runs the server (management, signal, relay, STUN, flow API) until SIGTERM or Ctrl-C: "
            + "modular-server --config server.toml. With a command, administers the same store, also while the server runs.")
        {
            config,
        };
        root.SetAction((parse, ct) => RunServerAsync(parse.GetValue(config), defaults, ct));

        var reusable = new Option<bool>("--reusable") { Description = "Usable by many peers (unlimited unless --usage-limit)" };
        var usageLimit = new Option<int?>("--usage-limit")
        {
            Description = "How many registrations the key allows; 0 = unlimited. Other than 1 it makes the key reusable, with or without --reusable",
        };
        var expires = new Option<string>("--expires") { Description = "Lifetime, e.g. 24h, 7d; default: never" };
        var name = new Option<string>("--name") { Description = "A name to recognise the key by" };
        var create = new Command("create", "Create a setup key and print it (shown once)") { reusable, usageLimit, expires, name };
        create.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var limit = parse.GetValue(usageLimit);
            if (limit < 0)
            {
                return Usage($"--usage-limit: expected 0 (unlimited) or more, got {limit}");
            }

            TimeSpan? lifetime = null;
            if (parse.GetValue(expires) is { Length: > 0 } text)
            {
                if (!ConfigDuration.TryParse(text, out var d) || d <= TimeSpan.Zero)
                {
                    return Usage($"--expires: expected a duration such as 24h or 7d, got '{text}'");
                }

                lifetime = d;
            }

            // An explicit --usage-limit 0 asks for unlimited uses, which only a reusable key has (as a limit above 1 does).
            var (record, plain) = await store.CreateSetupKeyAsync(
                new NewSetupKey(parse.GetValue(name) ?? "", parse.GetValue(reusable) || limit == 0, limit ?? 0, lifetime), ct);
            Console.Out.WriteLine(plain);
            Console.Error.WriteLine($"setup key {record.Id} '{record.Name}': {Describe(record)}. It is shown only now; store it safely.");
            return 0;
        }, ct));

        var jsonKeys = new Option<bool>("--json") { Description = "Print JSON" };
        var listKeys = new Command("list", "List setup keys (never the keys themselves)") { jsonKeys };
        listKeys.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var keys = await store.ListSetupKeysAsync(ct);
            var now = DateTimeOffset.UtcNow;
            if (parse.GetValue(jsonKeys))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    keys.Select(k => new { k.Id, k.Name, k.Reusable, k.UsageLimit, k.UsedCount, State = k.State(now), CreatedAt = Iso(k.CreatedAt), ExpiresAt = Iso(k.ExpiresAt), LastUsedAt = Iso(k.LastUsedAt) }),
                    Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"STATE",-10} {"USED",-9} {"EXPIRES",-20}");
            foreach (var k in keys)
            {
                var used = k.UsageLimit > 0 ? $"{k.UsedCount}/{k.UsageLimit}" : $"{k.UsedCount}/∞";
                Console.Out.WriteLine($"{k.Id,-13} {k.Name,-20} {k.State(now),-10} {used,-9} {Iso(k.ExpiresAt) ?? "never",-20}");
            }

            return 0;
        }, ct));

        var revokeTarget = new Argument<string>("key") { Description = "Setup key id or name" };
        var revoke = new Command("revoke", "Revoke a setup key") { revokeTarget };
        revoke.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var matched = await store.RevokeSetupKeyAsync(parse.GetValue(revokeTarget)!, ct);
            if (matched.Count == 0)
            {
                return Fail($"no setup key with id or name '{parse.GetValue(revokeTarget)}'");
            }

            foreach (var k in matched)
            {
                Console.Out.WriteLine(k.Revoked ? $"{k.Id} '{k.Name}' was already revoked" : $"revoked {k.Id} '{k.Name}'");
            }

            return 0;
        }, ct));

        var jsonPeers = new Option<bool>("--json") { Description = "Print JSON" };
        var listPeers = new Command("list", "List registered peers") { jsonPeers };
        listPeers.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, cfg) =>
        {
            var peers = await store.ListPeersAsync(ct);
            var now = DateTimeOffset.UtcNow;
            if (parse.GetValue(jsonPeers))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    peers.Select(p => new
                    {
                        p.Id,
                        Name = p.Hostname,
                        Fqdn = $"{p.DnsLabel}.{cfg.Account.DnsDomain}",
                        Ip = p.OverlayAddress.ToString(),
                        PublicKey = p.PublicKey.ToBase64(),
                        p.AgentVersion,
                        p.Os,
                        RegisteredAt = Iso(p.RegisteredAt),
                        LastSeen = Iso(p.LastSeen),
                        LoginExpiresAt = Iso(p.LoginExpiresAt),
                        Expired = p.IsExpired(now),
                    }),
                    Json));
                return 0;
            }

            Console.Out.WriteLine($"{"NAME",-24} {"IP",-15} {"PUBLIC KEY",-45} {"LAST SEEN",-20}");
            foreach (var p in peers)
            {
                Console.Out.WriteLine($"{p.Hostname,-24} {p.OverlayAddress,-15} {p.PublicKey.ToBase64(),-45} {Iso(p.LastSeen),-20}{(p.IsExpired(now) ? " (expired)" : "")}");
            }

            return 0;
        }, ct));

        var removeTarget = new Argument<string>("peer") { Description = "Peer: name, name.zone (as `modular status -d` shows it), overlay IP or public key" };
        var remove = new Command("remove", "Remove a peer; every other peer's map drops it on the next sync") { removeTarget };
        remove.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var removed = await store.RemovePeersAsync(parse.GetValue(removeTarget)!, ct);
            if (removed.Count == 0)
            {
                return Fail($"no peer matches '{parse.GetValue(removeTarget)}'");
            }

            foreach (var p in removed)
            {
                Console.Out.WriteLine($"removed {p.Hostname} {p.OverlayAddress} {p.PublicKey.ToBase64()}");
            }

            return 0;
        }, ct));

        var renameTarget = new Argument<string>("peer") { Description = "Peer: name, name.zone, overlay IP or public key" };
        var renameLabel = new Argument<string>("dns-label") { Description = "The new DNS label (letters, digits, inner hyphens; at most 63)" };
        var rename = new Command("rename", "Give a peer another DNS label (a peer's own hostname change never moves it)") { renameTarget, renameLabel };
        rename.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), defaults, async (store, cfg) =>
        {
            try
            {
                var peer = await store.RenamePeerAsync(parse.GetValue(renameTarget)!, parse.GetValue(renameLabel)!, ct);
                Console.Out.WriteLine($"{peer.OverlayAddress} is now {peer.DnsLabel}.{cfg.Account.DnsDomain}");
                return 0;
            }
            catch (ArgumentException e)
            {
                return Usage(e.Message);
            }
            catch (KeyNotFoundException e)
            {
                return Fail(e.Message);
            }
        }, ct));

        root.Add(new Command("setup-key", "Manage setup keys") { create, listKeys, revoke });
        root.Add(new Command("peers", "Manage peers") { listPeers, remove, rename });
        Networks.NetworkCommands.AddTo(root, config, defaults);
        Networks.DnsCommands.AddTo(root, config, defaults);
        Flows.FlowCommands.AddTo(root, config, defaults);
        return root;
    }

    /// <summary>The configuration to use, and whether the operator named it (flag or $MODULAR_CONFIG) or it is a default.</summary>
    private static (ServerConfig Config, string? From, bool Named) LoadConfig(string? path, CliDefaults defaults)
    {
        path ??= Environment.GetEnvironmentVariable("MODULAR_CONFIG");
        if (!string.IsNullOrEmpty(path))
        {
            return (ServerConfigLoader.LoadFile(path), path, true);
        }

        return File.Exists(defaults.ConfigPath)
            ? (ServerConfigLoader.LoadFile(defaults.ConfigPath), defaults.ConfigPath, false)
            : (new ServerConfig { DataDir = defaults.DataDir }, null, false);
    }

    /// <summary>
    /// Opens the store an admin command works on. With a configuration the operator named, the store is created
    /// if need be (keys may be made before the first start). Without one, only an existing store is used: a
    /// new empty one would hand out setup keys the running server, reading another store, rejects.
    /// </summary>
    internal static async Task<(IStore Store, ServerConfig Config)> OpenAdminStoreAsync(string? configPath, CliDefaults defaults, CancellationToken ct)
    {
        var (config, from, named) = LoadConfig(configPath, defaults);
        var database = Path.Combine(config.DataDir, ServerHost.DatabaseFile);
        if (!named && !File.Exists(database))
        {
            var where = from is null ? "" : $" (data_dir of {from})";
            throw new ConfigException($"no store at {database}{where}: pass --config server.toml (the running server's config)");
        }

        return (await ServerHost.OpenStoreAsync(config, ct), config);
    }

    internal static async Task<int> WithStoreAsync(string? configPath, CliDefaults defaults, Func<IStore, ServerConfig, Task<int>> action, CancellationToken ct)
    {
        try
        {
            var (store, config) = await OpenAdminStoreAsync(configPath, defaults, ct);
            await using (store)
            {
                return await action(store, config);
            }
        }
        catch (ConfigException e)
        {
            return Fail(e.Message);
        }
        catch (Networks.NetworkValidationException e)
        {
            // A value the store's validation refuses (named by its field) is bad input, as a malformed flag is: exit 2.
            return Usage(e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidOperationException or NameInUseException or AmbiguousPeerException)
        {
            return Fail(e.Message);
        }
    }

    private static async Task<int> RunServerAsync(string? configPath, CliDefaults defaults, CancellationToken ct)
    {
        ServerConfig config;
        try
        {
            config = LoadConfig(configPath, defaults).Config;
        }
        catch (ConfigException e)
        {
            return Fail(e.Message);
        }

        var logger = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("Grpc", LogEventLevel.Warning)
            // The host logs a start failure with its stack trace; a listener that cannot open is reported below in one line.
            .Filter.ByExcluding(e => e.Exception is not null && ListenException.Find(e.Exception, "", "") is not null)
            .WriteTo.Console(formatProvider: CultureInfo.InvariantCulture)
            .CreateLogger();
        try
        {
            await using var app = await ServerHost.BuildAsync(config, logger, ct);
            // systemd (Type=notify, the unit scripts/publish installs): STOPPING=1 when a stop begins, READY=1 once every
            // listener is open (Kestrel and the UDP services bind in StartAsync). Nothing without NOTIFY_SOCKET.
            var systemd = new SystemdNotifier();
            using var stopping = app.Lifetime.ApplicationStopping.Register(() => Notify(systemd, ServiceState.Stopping));
            await app.StartAsync(ct);
            logger.Information("modular-server listening on {Address} ({Scheme}); components: {Components}; data in {DataDir}",
                ServerHost.GrpcAddress(app), config.Tls.Enabled ? "TLS" : "plaintext", string.Join(", ", config.Components), config.DataDir);
            Notify(systemd, ServiceState.Ready);
            await app.WaitForShutdownAsync(ct);
            return 0;
        }
        catch (Exception e) when (ServerHost.FailedListener(e, config) is var (component, address) && ListenException.Find(e, component, address) is { } listen)
        {
            logger.Fatal("modular-server could not start: {Message}", listen.Message);
            return ErrorExit;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            logger.Fatal("modular-server could not start: {Message}", e.Message);
            return 1;
        }
        finally
        {
            await logger.DisposeAsync();
        }
    }

    private static void Notify(SystemdNotifier systemd, ServiceState state)
    {
        if (systemd.IsEnabled)
        {
            systemd.Notify(state);
        }
    }

    private static string Describe(SetupKeyRecord k) =>
        (k.Reusable ? k.UsageLimit > 0 ? $"reusable, {k.UsageLimit} uses" : "reusable, unlimited uses" : "one-off")
        + (k.ExpiresAt is { } e ? $", expires {Iso(e)}" : ", never expires");

    internal static string? Iso(DateTimeOffset? t) => t?.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

    /// <summary>The command failed (exit 1); <paramref name="message"/> goes to stderr.</summary>
    internal static int Fail(string message)
    {
        Console.Error.WriteLine($"modular-server: {message}");
        return ErrorExit;
    }

    /// <summary>A value on the command line is malformed (exit 2), found after parsing (e.g. a duration).</summary>
    internal static int Usage(string message)
    {
        Console.Error.WriteLine($"modular-server: {message}");
        return UsageExit;
    }
}

/// <summary>Where `modular-server` looks when neither --config nor $MODULAR_CONFIG names a configuration (tests point it elsewhere).</summary>
public sealed record CliDefaults(string ConfigPath, string DataDir)
{
    public static CliDefaults System { get; } = new(ServerCli.DefaultConfigPath, new ServerConfig().DataDir);
}
