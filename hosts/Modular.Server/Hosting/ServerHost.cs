using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Modular.Server.Config;
using Modular.Server.Flows;
using Modular.Server.Management;
using Modular.Server.Relay;
using Modular.Server.Signal;
using Modular.Server.Store;
using Modular.Server.Stun;
using Serilog;

namespace Modular.Server.Hosting;

/// <summary>Builds the control-plane process: Kestrel gRPC plus the UDP services <c>components</c> selects.</summary>
public static class ServerHost
{
    public const string DatabaseFile = "modular.db";

    private static readonly string[] GrpcServed = ["management", "signal", "flow"];

    /// <summary>Opens the store configured in <paramref name="config"/> (creating or migrating its schema).</summary>
    public static async Task<IStore> OpenStoreAsync(ServerConfig config, CancellationToken cancellationToken, TimeProvider? time = null)
    {
        ServerSecrets.EnsureDataDir(config.DataDir);
        var store = new SqliteStore(Path.Combine(config.DataDir, DatabaseFile), time, config.Account.DnsDomain);
        await store.InitializeAsync(cancellationToken);
        return store;
    }

    /// <param name="configureServices">Runs last: tests replace services here (e.g. the signal router).</param>
    /// <param name="time">The clock of every component; tests pass a fake one.</param>
    public static async Task<WebApplication> BuildAsync(ServerConfig config, Serilog.ILogger logger, CancellationToken cancellationToken, Action<IServiceCollection>? configureServices = null, TimeProvider? time = null)
    {
        // Accepted keys that do nothing yet: one warning each, at the top of the start log.
        foreach (var warning in Config.NotBuiltYet.Warnings(config))
        {
            logger.Warning("{Warning:l}", warning);
        }

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.AddSerilog(logger, dispose: false);

        var listen = IPEndPoint.Parse(config.Listen);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Sync and signal streams live for days: ping so streams of vanished agents are reaped.
            kestrel.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
            kestrel.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(20);
            kestrel.Listen(listen, endpoint =>
            {
                endpoint.Protocols = HttpProtocols.Http2;
                if (config.Tls.Enabled)
                {
                    endpoint.UseHttps(X509Certificate2.CreateFromPemFile(config.Tls.Cert, config.Tls.Key));
                }
            });
        });

        // Prometheus, only when configured: its own HTTP/1 listener; /metrics answers on that listener only.
        var metricsListen = config.MetricsListen.Length > 0 ? IPEndPoint.Parse(config.MetricsListen) : null;
        if (metricsListen is not null)
        {
            builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(metricsListen, endpoint => endpoint.Protocols = HttpProtocols.Http1));
        }

        builder.Services.AddSingleton<Metrics.ServerCounters>();
        builder.Services.AddSingleton<Metrics.ServerMetrics>();

        time ??= TimeProvider.System;
        var store = await OpenStoreAsync(config, cancellationToken, time);
        var secrets = ServerSecrets.LoadOrCreate(config.DataDir);
        builder.Services.AddSingleton(config);
        builder.Services.AddSingleton(time);
        builder.Services.AddSingleton(store);
        builder.Services.AddSingleton(secrets);
        // Management's two Rosenpass key calls carry a half-megabyte key: its service admits that much, and every other
        // management call still refuses a body over the ordinary limit (ManagementGrpcService.Open).
        builder.Services.AddGrpc(o => o.MaxReceiveMessageSize = ManagementGrpcService.MaxMessageSize)
            .AddServiceOptions<ManagementGrpcService>(o => o.MaxReceiveMessageSize = Modular.Control.Rosenpass.RosenpassKeys.MaxMessageSize);

        if (config.Runs("management"))
        {
            builder.Services.AddSingleton<NetworkState>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<NetworkState>());
            builder.Services.AddSingleton<ServiceAddressResolver>();
            builder.Services.AddSingleton<MetadataChangeLimiter>();
        }

        // One live Sync stream and one signal stream per peer key (PeerSessions<ManagementGrpcService>, <SignalGrpcService>).
        builder.Services.AddSingleton(typeof(PeerSessions<>));

        if (config.Runs("signal"))
        {
            builder.Services.TryAddSingleton<ISignalRouter, InProcessSignalRouter>();
        }

        if (config.Runs("relay"))
        {
            builder.Services.AddSingleton(sp => new RelayServer(
                IPEndPoint.Parse(config.RelayListen), secrets, time, sp.GetRequiredService<ILogger<RelayServer>>()));
            builder.Services.AddHostedService(sp => sp.GetRequiredService<RelayServer>());
        }

        if (config.Runs("stun"))
        {
            builder.Services.AddSingleton(sp => new StunServer(IPEndPoint.Parse(config.StunListen), sp.GetRequiredService<ILogger<StunServer>>()));
            builder.Services.AddHostedService(sp => sp.GetRequiredService<StunServer>());
        }

        if (config.Runs("flow"))
        {
            builder.Services.TryAddSingleton(new FlowApiLimits());
            builder.Services.AddSingleton<RedisFlowCache>();
            builder.Services.AddSingleton<FlowRetention>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<FlowRetention>());
        }

        configureServices?.Invoke(builder.Services);
        var app = builder.Build();
        if (metricsListen is not null)
        {
            var metrics = app.Services.GetRequiredService<Metrics.ServerMetrics>();
            app.MapGet("/metrics", async context =>
            {
                if (context.Connection.LocalPort != metricsListen.Port)
                {
                    context.Response.StatusCode = StatusCodes.Status404NotFound;
                    return;
                }

                context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
                await metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
            });
            logger.Information("Prometheus metrics on http://{Listen}/metrics", config.MetricsListen);
        }

        if (config.Runs("management"))
        {
            app.MapGrpcService<ManagementGrpcService>();
        }

        if (config.Runs("signal"))
        {
            app.MapGrpcService<SignalGrpcService>();
        }

        if (config.Runs("flow"))
        {
            app.MapGrpcService<FlowGrpcService>();
            if (app.Services.GetRequiredService<RedisFlowCache>().Enabled && RedisUrl.TryParse(config.RedisUrl, out var redis, out _))
            {
                logger.Information("Flow cache: Redis at {Redis}", redis!.ToString());
            }
        }

        return app;
    }

    /// <summary>
    /// Which listener a Kestrel start failure is about, for its one-line error: the metrics endpoint when Kestrel's
    /// message names its address ("Failed to bind to address http://127.0.0.1:9100: address already in use."), else gRPC.
    /// </summary>
    public static (string Component, string Address) FailedListener(Exception e, ServerConfig config)
    {
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (config.MetricsListen.Length > 0 && inner.Message.Contains($"http://{config.MetricsListen}", StringComparison.Ordinal))
            {
                return ("metrics", config.MetricsListen);
            }
        }

        return (GrpcComponents(config), config.Listen);
    }

    /// <summary>The components served on the gRPC listener, as an error names them ("management/signal/flow").</summary>
    public static string GrpcComponents(ServerConfig config)
    {
        var served = GrpcServed.Where(config.Runs).ToList();
        return served.Count > 0 ? string.Join('/', served) : "grpc";
    }

    /// <summary>The gRPC address Kestrel actually bound (useful with port 0).</summary>
    public static Uri GrpcAddress(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses
            ?? throw new InvalidOperationException("The server has not started.");
        return new Uri(addresses.First().Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal).Replace("[::]", "[::1]", StringComparison.Ordinal));
    }
}
