using Microsoft.Extensions.Logging;

namespace Modular.Wg;

/// <summary>
/// wireguard-go style logging: "LEVEL: (iface) yyyy/MM/dd HH:mm:ss message" on stderr, the
/// level chosen by LOG_LEVEL (verbose|debug, error, silent; error by default).
/// </summary>
internal sealed class StderrLoggerFactory(string interfaceName, LogLevel minimum) : ILoggerFactory
{
    private static readonly Lock WriteLock = new();

    public static LogLevel FromEnvironment(string? value) => value?.ToLowerInvariant() switch
    {
        "verbose" or "debug" => LogLevel.Debug,
        "info" => LogLevel.Information,
        "silent" => LogLevel.None,
        _ => LogLevel.Error,
    };

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(StderrLoggerFactory owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= owner._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            var level = logLevel >= LogLevel.Error ? "ERROR" : "DEBUG";
            var line = $"{level}: ({owner._interfaceName}) {DateTime.Now:yyyy/MM/dd HH:mm:ss} {formatter(state, exception)}";
            if (exception is not null)
            {
                line += $": {exception.Message}";
            }

            lock (WriteLock)
            {
                Console.Error.WriteLine(line);
            }
        }
    }

    private readonly string _interfaceName = interfaceName;
    private readonly LogLevel _minimum = minimum;
}
