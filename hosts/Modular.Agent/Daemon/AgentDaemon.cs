using System.Reflection;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Modular.Abstractions.Config;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Proxy;
using Modular.Agent.Cli;
using Modular.Agent.Ui;
using Modular.Composition;
using Modular.Core.Config;
using Modular.Core.Engine;
using Modular.Core.Network;
using Modular.Core.Peers;
using Modular.Core.Status;
using Serilog;

namespace Modular.Agent.Daemon;

/// <summary>What `modular up` was given on its command line (null: not given).</summary>
/// <param name="LazyConnections">--enable-lazy-connection (true) or --lazy-connections on|off; null: neither.</param>
internal sealed record UpOptions(string? ConfigPath, bool? LazyConnections, string? Socket, string? LogLevel, string? Hostname = null);

/// <summary>
/// `modular up`: loads the config and plugins, prepares the identity and the CLI socket, then
/// runs until SIGTERM/SIGINT or `modular down`. Any start-up problem is one clear line on
/// stderr and exit code 1; a clean stop is exit code 0 with the socket removed.
/// </summary>
internal static class AgentDaemon
{
    public static async Task<int> RunAsync(UpOptions options, CancellationToken cancellationToken)
    {
        MallocArenas.Limit(); // first: before the daemon's threads take arenas of their own
        var configPath = AgentPaths.ConfigPath(options.ConfigPath);
        AgentConfig config;
        try
        {
            var socketOverride = options.Socket ?? NonEmpty(Environment.GetEnvironmentVariable(AgentPaths.SocketEnvironmentVariable));
            config = AgentConfigLoader.Load(
                configPath,
                AgentPaths.Environment(),
                new AgentConfigOverrides
                {
                    LazyConnections = options.LazyConnections,
                    Socket = socketOverride,
                    LogLevel = options.LogLevel,
                    Hostname = options.Hostname,
                });
        }
        catch (ConfigException e)
        {
            await Console.Error.WriteLineAsync(e.Message);
            return ExitCodes.Error;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"{configPath}: {e.Message}");
            return ExitCodes.Error;
        }

        // Accepted keys that do nothing yet: one line each, as `config check` prints them; the agent still starts.
        foreach (var warning in NotBuiltYet.Warnings(config))
        {
            await Console.Error.WriteLineAsync($"warning: {warning}");
        }

        // What the host must give the agent, checked before anything registers (a setup key used up, a peer added to
        // everyone's map) or is created: one line and exit 1 when something is missing. A daemon already running holds
        // the port: the socket check below says so better.
        if (!DaemonSocket.IsAnswering(Path.GetFullPath(config.EffectiveSocketPath)) && StartupPreflight.Check(config, LinuxHostProbe.Instance) is { } missing)
        {
            await Console.Error.WriteLineAsync(missing);
            return ExitCodes.Error;
        }

        using var logger = AgentLogging.Create(config.Log.Level, config.Log.File);
        try
        {
            return await RunAsync(configPath, config, LazyPinnedBy(config), logger, cancellationToken);
        }
        catch (Exception e) when (e is ConfigException or PluginLoadException or InvalidOperationException or InvalidDataException or IOException or UnauthorizedAccessException)
        {
            // One line that says what to fix, on stderr for scripts and in the log for the record.
            logger.Fatal("Cannot start: {Problem}", e.Message);
            await Console.Error.WriteLineAsync(e.Message);
            return ExitCodes.Error;
        }
    }

    /// <summary>
    /// The peer connections' timings: the defaults, or with MODULAR_TEST_HOOKS=1 those <see cref="TestPeerTimings.Variable"/>
    /// shortens (a test hook, never a user setting). Set without the hooks, or malformed, it stops start-up.
    /// </summary>
    private static PeerConnOptions PeerOptions(AgentConfig config, bool testHooks, Serilog.ILogger logger)
    {
        var options = new PeerConnOptions(ForceRelay: config.Connection.ForceRelay);
        if (NonEmpty(Environment.GetEnvironmentVariable(TestPeerTimings.Variable)) is not { } spec)
        {
            return options;
        }

        if (!testHooks)
        {
            throw new InvalidDataException($"{TestPeerTimings.Variable} is a test hook: it needs {EngineControl.TestHooksVariable}=1 in the daemon's environment");
        }

        options = TestPeerTimings.Apply(options, spec);
        logger.Warning("Test hook: peer timings {Timings} ({Variable})", spec, TestPeerTimings.Variable);
        return options;
    }

    /// <summary>What fixed lazy connections for this run so the local UI cannot change them: the flag or a variable; null: neither.</summary>
    private static string? LazyPinnedBy(AgentConfig config)
        => config.Features.LazyConnections.Flag is not null ? "the --enable-lazy-connection or --lazy-connections flag"
            : config.Features.LazyConnections.Environment is not null
                ? $"the {AgentEnvironment.LazyConnectionsOnOff} or {AgentEnvironment.LazyConnections} variable"
            : null;

    private static async Task<int> RunAsync(string configPath, AgentConfig config, string? lazyPinnedBy, Serilog.Core.Logger logger, CancellationToken cancellationToken)
    {
        var version = typeof(AgentDaemon).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        logger.Information("modular {Version} starting (pid {Pid}), config {ConfigPath}", version, Environment.ProcessId, configPath);
        logger.Information(
            "interface {Interface} ({Mode}, port {Port}, mtu {Mtu}); management {Management}; setup key: {SetupKey}",
            config.Interface.Name,
            config.Interface.Mode.ToString().ToLowerInvariant(),
            config.Interface.Port,
            config.Interface.Mtu,
            string.Join(", ", config.ManagementUrls),
            config.SetupKey.Length > 0 ? "(hidden)" : "(none)");

        var pluginsDir = AgentPaths.PluginsDir(config);
        using var loggerFactory = new Serilog.Extensions.Logging.SerilogLoggerFactory(logger);
        using var catalog = PluginCatalog.Load(pluginsDir, loggerFactory.CreateLogger("Modular.Composition"));
        LogPlugins(logger, pluginsDir, catalog);
        PluginSelection.Validate(config, catalog);

        var socketPath = Path.GetFullPath(config.EffectiveSocketPath);
        if (DaemonSocket.Prepare(socketPath) == DaemonSocket.Previous.StaleSocketRemoved)
        {
            logger.Warning("Removed a stale socket left by a daemon that did not stop cleanly: {Socket}", socketPath);
        }

        var (privateKey, publicKey, created) = PrivateKeyFile.LoadOrCreate(config.StateDir);
        if (created)
        {
            logger.Information("Generated a new WireGuard key in {StateDir}; public key {PublicKey}", config.StateDir, publicKey.ToBase64());
        }
        else
        {
            logger.Information("WireGuard public key {PublicKey} (key file in {StateDir})", publicKey.ToBase64(), config.StateDir);
        }

        // Before the first network map a locally enabled Rosenpass is pending, not on: its provider starts with the map.
        var beforeFirstMap = RosenpassAvailability.BeforeFirstMap(config, catalog.NamesOf<Modular.Abstractions.Security.IPresharedKeyProviderFactory>());
        var recorder = new StatusRecorder(
            new InterfaceStatus(config.Interface.Name, config.Interface.Mode.ToString().ToLowerInvariant(), config.Interface.Port, config.Interface.Mtu),
            FeatureStatusBuilder.Build(config, null, AccountFeatures.None, beforeFirstMap),
            publicKey.ToBase64(),
            new ServiceStatus(config.ManagementUrls.Count > 0 ? config.ManagementUrls[0].ToString() : "", false, "connecting"),
            new ServiceStatus("", false, "not connected: the signal address comes from the management login"));

        var switches = new FeatureSwitches();
        var uiSettings = new UiSettingsFile(config.StateDir);
        if (lazyPinnedBy is null)
        {
            try
            {
                if (uiSettings.LoadLazyConnections() is { } saved)
                {
                    switches.SetLazyConnections(saved);
                    recorder.UpdateFeatures(_ => FeatureStatusBuilder.Build(config, saved, AccountFeatures.None, beforeFirstMap));
                    logger.Information("Lazy connections {State}, as last switched in the local UI ({Path})", saved ? "on" : "off", uiSettings.Path);
                }
            }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
            {
                logger.Warning("Ignoring the local UI's saved settings: {Problem}", e.Message);
            }
        }

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.AddSerilog(logger, dispose: false);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.ListenUnixSocket(socketPath, listen => listen.Protocols = HttpProtocols.Http2);
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(recorder);
        builder.Services.AddSingleton(catalog);
        builder.Services.AddSingleton(new DaemonInfo(config.SourcePath.Length > 0 ? config.SourcePath : configPath, pluginsDir, socketPath));
        builder.Services.AddSingleton(TimeProvider.System);
        var uiLogins = new UiLogins(TimeProvider.System);
        builder.Services.AddSingleton(uiLogins);
        var engineControl = new EngineControl(Environment.GetEnvironmentVariable(EngineControl.TestHooksVariable) == "1");
        var peerOptions = PeerOptions(config, engineControl.TestHooks, logger);
        builder.Services.AddSingleton(engineControl);

        await using var app = builder.Build();
        app.MapGrpcService<DaemonGrpcService>();
        var systemd = new ServiceNotifier();
        using var stopping = app.Lifetime.ApplicationStopping.Register(systemd.Stopping);
        var bound = false;
        try
        {
            await app.StartAsync(cancellationToken);
            bound = true;
            DaemonSocket.SetMode(socketPath);
            logger.Information("Listening for `modular` commands on {Socket}", socketPath);
            var engineOptions = new EngineOptions(
                config,
                privateKey,
                catalog.All<IProxyFactory>().ToDictionary(p => p.Name, p => p.Factory, StringComparer.Ordinal),
                app.Services,
                version,
                config.Hostname.Length > 0 ? config.Hostname : Environment.MachineName)
            {
                PeerOptions = peerOptions,
                Switches = switches,
                FlowSinkFactories = catalog.All<IFlowSinkFactory>().ToDictionary(p => p.Name, p => p.Factory, StringComparer.Ordinal),
                PskProviderFactories = catalog.All<Modular.Abstractions.Security.IPresharedKeyProviderFactory>().ToDictionary(p => p.Name, p => p.Factory, StringComparer.Ordinal),
            };

            // The daemon owns the engine: a network change or a restart request stops it fully, then starts a new one.
            // systemd hears READY=1 once the first engine has its interface up or waits to retry it.
            var firstEngineStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var supervisor = new EngineSupervisor(
                (generation, stop) =>
                {
                    var engine = new AgentEngine(engineOptions, recorder, loggerFactory, TimeProvider.System, engineControl.SeamsFor(generation));
                    _ = engine.Started.ContinueWith(_ => firstEngineStarted.TrySetResult(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                    return engine.RunAsync(stop);
                },
                stop => NetworkWatch.WaitForChangeAsync(config.Interface.Name, loggerFactory, stop),
                recorder,
                loggerFactory.CreateLogger<EngineSupervisor>());
            engineControl.Attach(supervisor);
            await using var ui = await LocalUi.StartAsync(config.Ui, recorder, switches, uiSettings, lazyPinnedBy, logger, uiLogins, cancellationToken);
            await using var metrics = await Modular.Agent.Metrics.MetricsEndpoint.StartAsync(config.Metrics, recorder, TimeProvider.System, logger, cancellationToken);
            using var engineStop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var engineRun = supervisor.RunAsync(engineStop.Token);
            var heapTrimming = new HeapTrimmer(new RuntimeFullCollector(), TimeProvider.System).RunAsync(engineStop.Token);
            var shutdown = app.WaitForShutdownAsync(cancellationToken);
            if (await Task.WhenAny(firstEngineStarted.Task, engineRun, shutdown) == firstEngineStarted.Task)
            {
                systemd.Ready(); // the socket listens (above) and the interface is up or being retried
            }

            if (await Task.WhenAny(engineRun, shutdown) == engineRun && engineRun.Exception?.InnerException is { } failure)
            {
                systemd.Stopping();
                var problem = failure is EngineFatalException ? failure.Message : $"the engine failed: {failure}";
                logger.Fatal("Cannot go on: {Problem}", problem);
                await Console.Error.WriteLineAsync(problem);
                await app.StopAsync(CancellationToken.None);
                return ExitCodes.Error;
            }

            // The engine closes (destroys) the interface before the daemon reports it stopped. From here
            // on a clean stop logs no warning: failures caused by our own cancellation are expected.
            systemd.Stopping();
            logger.Information("Stopping: closing connections and the interface");
            await engineStop.CancelAsync();
            try
            {
                await engineRun;
            }
            catch (Exception e) when (!AgentEngine.IsOwnCancellation(e, engineStop.Token))
            {
                // A cancelled gRPC call (RpcException Cancelled) is our own stop, like OperationCanceledException: no trace.
                logger.Error(e, "The engine failed while stopping");
            }

            await shutdown;
            await heapTrimming;
        }
        finally
        {
            // Only our own socket: if binding failed, the file there may be a daemon that won a race.
            if (bound)
            {
                DaemonSocket.Remove(socketPath);
            }
        }

        logger.Information("modular stopped");
        return ExitCodes.Ok;
    }

    // The catalog logs each plugin as it loads or fails, with its path and reason; this is the one-line summary.
    private static void LogPlugins(Serilog.ILogger logger, string pluginsDir, PluginCatalog catalog)
    {
        var loaded = string.Join(", ", catalog.Plugins.Where(p => p.Loaded).Select(p => p.Name));
        var failed = catalog.Plugins.Where(p => !p.Loaded).Select(p => p.Name).ToList();
        if (failed.Count == 0)
        {
            logger.Information("Plugins from {PluginsDir}: {Loaded}", pluginsDir, loaded.Length > 0 ? loaded : "(none)");
        }
        else
        {
            logger.Warning(
                "Plugins from {PluginsDir}: {Loaded}; NOT loaded: {Failed} (see `modular plugins` for why)",
                pluginsDir,
                loaded.Length > 0 ? loaded : "(none)",
                string.Join(", ", failed));
        }
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
