using Serilog;
using Serilog.Events;

namespace Modular.Agent.Daemon;

/// <summary>The daemon's Serilog setup: console always, a rolling file when log.file is set.</summary>
internal static class AgentLogging
{
    private const string ConsoleTemplate = "[{Timestamp:HH:mm:ss} {Level:u3}] {Message:lj}{NewLine}{Exception}";
    private const string FileTemplate = "{Timestamp:yyyy-MM-ddTHH:mm:ss.fffzzz} [{Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}";

    /// <summary>trace, debug, info, warn, error (the loader validated the word); anything else is info.</summary>
    public static LogEventLevel ParseLevel(string level) => level.ToUpperInvariant() switch
    {
        "TRACE" => LogEventLevel.Verbose,
        "DEBUG" => LogEventLevel.Debug,
        "WARN" or "WARNING" => LogEventLevel.Warning,
        "ERROR" => LogEventLevel.Error,
        _ => LogEventLevel.Information,
    };

    public static Serilog.Core.Logger Create(string level, string file)
    {
        var configuration = new LoggerConfiguration()
            .MinimumLevel.Is(ParseLevel(level))
            // ASP.NET Core and gRPC narrate every request at Information: keep only their problems.
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("Grpc", LogEventLevel.Warning)
            .Enrich.FromLogContext()
            .WriteTo.Console(outputTemplate: ConsoleTemplate, formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        if (file.Length > 0)
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(file));
            if (!string.IsNullOrEmpty(directory))
            {
                Directory.CreateDirectory(directory);
            }

            configuration = configuration.WriteTo.File(
                file,
                outputTemplate: FileTemplate,
                formatProvider: System.Globalization.CultureInfo.InvariantCulture,
                rollingInterval: RollingInterval.Day,
                fileSizeLimitBytes: 50L * 1024 * 1024,
                rollOnFileSizeLimit: true,
                retainedFileCountLimit: 7);
        }

        return configuration.CreateLogger();
    }
}
