using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Modular.Agent.Hosting;
using Modular.Core.Config;
using Modular.Core.Status;

namespace Modular.Agent.Metrics;

/// <summary>
/// The agent's Prometheus endpoint (<c>[metrics] listen</c>, default 127.0.0.1:9090): <c>GET /metrics</c> in the text
/// format, from <see cref="AgentMetrics"/>. Like the local UI, an endpoint that cannot start (the port is taken — 9090
/// is also Prometheus's own default — or the address is not this host's) is a warning in the log and in status
/// (<c>metrics.warning</c>): the VPN runs on without it. Status shows it serving only while it listens.
/// </summary>
internal sealed class MetricsEndpoint : IAsyncDisposable
{
    /// <summary>The path Prometheus scrapes.</summary>
    public const string Path = "/metrics";

    private readonly WebApplication _app;
    private readonly StatusRecorder _recorder;
    private readonly string _listen;

    private MetricsEndpoint(WebApplication app, StatusRecorder recorder, string listen)
    {
        _app = app;
        _recorder = recorder;
        _listen = listen;
    }

    /// <summary>Starts the endpoint on <paramref name="listen"/>; null when it is off or could not start (after a warning, also in status).</summary>
    public static async Task<MetricsEndpoint?> StartAsync(ListenConfig listen, StatusRecorder recorder, TimeProvider time, Serilog.ILogger logger, CancellationToken cancellationToken)
    {
        if (!listen.Enabled)
        {
            recorder.SetMetrics(EndpointStatus.Off);
            return null;
        }

        // The config loader refuses such an address already (file:line:col); this guards configs built in code.
        if (!IPEndPoint.TryParse(listen.Listen, out var endpoint))
        {
            return NotStarted(recorder, logger, listen.Listen, $"{listen.Listen} is not an IP address and port");
        }

        recorder.SetMetrics(new EndpointStatus(listen.Listen, false, null));
        var metrics = new AgentMetrics(recorder, time);
        var builder = LocalHttpEndpoint.CreateBuilder(endpoint, maxRequestBodySize: 0);
        var app = builder.Build();
        app.MapGet(Path, async context =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
        });
        var problem = await LocalHttpEndpoint.StartAsync(app, listen.Listen,
            $"{listen.Listen} is taken by another program (9090 is also Prometheus's own port): set [metrics] listen to a free address and port, or \"\" to turn metrics off",
            cancellationToken);
        if (problem is not null)
        {
            return NotStarted(recorder, logger, listen.Listen, problem);
        }

        recorder.SetMetrics(new EndpointStatus(listen.Listen, true, null));
        logger.Information("Prometheus metrics on http://{Listen}{Path}", listen.Listen, Path);
        return new MetricsEndpoint(app, recorder, listen.Listen);
    }

    private static MetricsEndpoint? NotStarted(StatusRecorder recorder, Serilog.ILogger logger, string listen, string why)
    {
        logger.Warning("Metrics not served: {Problem}", why);
        recorder.SetMetrics(new EndpointStatus(listen, false, why));
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        _recorder.SetMetrics(new EndpointStatus(_listen, false, null));
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
    }
}
